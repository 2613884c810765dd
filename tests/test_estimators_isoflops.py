"""Approach 1 recovers a known IsoFLOPs envelope from a noisy runs table."""

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from vocabscale.estimate import isoflops, synthetic
from vocabscale.estimate.approaches import fit_approach
from vocabscale.estimate.published import PAPER_COEFFICIENTS
from vocabscale.runs.table import RunsTableError, prepare_runs
from vocabscale.tokens_per_char import PAPER_TOKENS_PER_CHAR

TRUTH = PAPER_COEFFICIENTS["isoflops"]
F = PAPER_TOKENS_PER_CHAR
#: Budgets 1.87x apart; each run is evaluated at 1/4, 1/2 and all of its budget, so only the
#: compute-optimal run's last checkpoint is the lowest loss so far at its budget.
BUDGETS = np.geomspace(1e17, 1e20, 12)


@pytest.fixture(scope="module", params=[0, 1], ids=["seed0", "seed1"])
def profiles(request):
    frame = synthetic.isoflop_profiles(
        TRUTH["K1"], TRUTH["K2"], TRUTH["gamma"], BUDGETS, noise=0.003, seed=request.param
    )
    return prepare_runs(frame, F)


@pytest.mark.parametrize("densify", [True, False])
def test_known_envelope_is_recovered(profiles, densify):
    """K1 and gamma within 2%, and Nnv, Nv (hence V) within 3% at budgets across the range.
    K2 is judged through the Nv it predicts: it is ln Nv at C = 1 FLOP, about 19 decades below
    the data, so a 1% change in gamma moves it by 0.18, or 11% of its value."""
    fitted = fit_approach("isoflops", profiles, F, {"densify": densify})
    for key in ("K1", "gamma"):
        assert fitted.coefficients[key] == pytest.approx(TRUTH[key], rel=0.02), key
    assert fitted.coefficients["nnv_exponent"] == 0.5
    for budget in (3e17, 1e19, 5e19):
        nnv = np.exp(TRUTH["K1"]) * budget**0.5
        assert isoflops.optimal_flops(fitted.coefficients, nnv) == pytest.approx(budget, rel=0.03)
        true_nv = np.exp(TRUTH["K2"]) * budget ** TRUTH["gamma"]
        assert isoflops.predict_vocab_params(fitted.coefficients, budget) == pytest.approx(
            true_nv, rel=0.03
        )
    assert fitted.options["densify"] is densify
    assert set(fitted.quality) >= {"nnv", "vocab_params", "characters"}
    assert fitted.quality["vocab_params"]["r_squared"] > 0.8  # noise puts a few runs on it


def test_free_exponents_recover_one_half(profiles):
    fitted = fit_approach("isoflops", profiles, F, {"free_exponents": True})
    assert fitted.coefficients["nnv_exponent"] == pytest.approx(0.5, rel=0.02)
    assert fitted.coefficients["gamma"] == pytest.approx(TRUTH["gamma"], rel=0.02)
    assert fitted.options["free_exponents"] is True
    # H = C / (6 (Nnv + Nv) f(V)) on the optimum is close to, not exactly, a C^0.5 law
    assert fitted.coefficients["characters_exponent"] == pytest.approx(0.5, abs=0.05)


def test_huber_fits_converge_to_the_least_absolute_deviation_line(profiles):
    """With delta = 1e-3 on log residuals the Huber fit is nearly LAD: statsmodels' QuantReg
    (median regression) must land on the same line."""
    envelope = isoflops.lower_envelope(isoflops.isoflops_points(profiles, F, True, 50, 20))
    log_c = np.log(envelope["flops"].to_numpy())
    log_nv = np.log((envelope["vocab_size"] * envelope["d_model"]).to_numpy())
    intercept, slope, _ = isoflops.fit_power_law(log_c, log_nv, None, 1e-3)
    median = sm.QuantReg(log_nv, sm.add_constant(log_c)).fit(q=0.5).params
    assert slope == pytest.approx(median[1], abs=2e-3)
    assert intercept + slope * np.log(1e19) == pytest.approx(
        median[0] + median[1] * np.log(1e19), abs=5e-3
    )


def test_lower_envelope_keeps_only_new_minima():
    points = pd.DataFrame({"flops": [1, 2, 3, 4, 5, 5], "loss_u": [3.0, 3.5, 2.0, 2.0, 1.0, 0.5]})
    kept = isoflops.lower_envelope(points)
    assert kept["flops"].tolist() == [1, 3, 5]
    assert kept["loss_u"].tolist() == [3.0, 2.0, 0.5]


def test_envelope_on_the_grid_edge_is_reported(caplog):
    """A paper-like grid whose smallest model is larger than the optimum at low budgets."""
    law = synthetic.separable_law(TRUTH["K1"], TRUTH["K2"], TRUTH["gamma"])
    frame = synthetic.runs_table(law, synthetic.paper_models(2), (4096, 8192, 16384), 10)
    fitted = fit_approach("isoflops", prepare_runs(frame, F), F, {"densify": False})
    shares = fitted.quality["envelope_at_grid_edge"]
    assert shares["non_vocab_params"] == 1.0  # two models: every point is at an edge
    assert "smallest or largest trained Nnv" in caplog.text


def test_too_few_compute_levels_is_a_clear_error():
    law = synthetic.separable_law(TRUTH["K1"], TRUTH["K2"], TRUTH["gamma"])
    one_run = synthetic.runs_table(law, synthetic.paper_models(1), (4096,), 5)
    with pytest.raises(RunsTableError, match="same Nv"):
        fit_approach("isoflops", prepare_runs(one_run, F), F)
    single_point = one_run.iloc[[0]]
    with pytest.raises(RunsTableError, match="1 distinct compute level"):
        fit_approach("isoflops", prepare_runs(single_point, F), F)
