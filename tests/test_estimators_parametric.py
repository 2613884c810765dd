"""Approach 3 recovers a known parametric law from a noisy paper-like runs table."""

import logging

import numpy as np
import pytest
from scipy.optimize import minimize

from vocabscale.estimate import parametric, synthetic
from vocabscale.estimate.approaches import fit_approach
from vocabscale.estimate.fitting import huber_objective
from vocabscale.estimate.predict import predictions_table
from vocabscale.estimate.published import PAPER_COEFFICIENTS
from vocabscale.estimate.results import ApproachResult, Estimates
from vocabscale.runs.table import RunsTableError, prepare_runs
from vocabscale.tokens_per_char import PAPER_TOKENS_PER_CHAR

F = PAPER_TOKENS_PER_CHAR
LAW = PAPER_COEFFICIENTS["parametric"]
#: (Nnv, d, C): inside the trained range, and the paper's 2.87B and 7B targets.
TARGETS = [(302e6, 1024, 1e20), (2.87e9, 3200, 1.19e21), (7e9, 4096, 7.05e21)]


@pytest.fixture(scope="module")
def paper_like():
    """6 models x 10 vocabularies x 20 checkpoints, L_u from the published law + noise."""
    frame = synthetic.runs_table(synthetic.parametric_law(LAW), noise=0.002, seed=0)
    return prepare_runs(frame, F)


@pytest.fixture(scope="module")
def fitted(paper_like):
    return fit_approach("parametric", paper_like, F)


def test_parameters_are_recovered(fitted):
    for name in parametric.PARAMETERS:
        assert fitted.coefficients[name] == pytest.approx(LAW[name], rel=0.02), name
    assert fitted.coefficients["beta"] == fitted.coefficients["alpha1"]
    assert fitted.quality["on_bound"] == []
    assert fitted.quality["converged"]
    assert fitted.quality["r_squared"] > 0.999
    assert fitted.quality["rmse"] == pytest.approx(0.002, rel=0.2)  # the noise put in


@pytest.mark.parametrize(("nnv", "d_model", "budget"), TARGETS)
def test_predicted_vocabulary_is_recovered(fitted, nnv, d_model, budget):
    predicted, at_bound = parametric.optimal_vocab(fitted.coefficients, nnv, d_model, budget)
    truth, _ = parametric.optimal_vocab(LAW, nnv, d_model, budget)
    assert predicted == pytest.approx(truth, rel=0.03)
    assert not at_bound


def test_fit_is_a_minimum_of_the_huber_objective(paper_like, fitted):
    """A Nelder-Mead polish from the fitted point finds nothing lower."""
    points = paper_like.frame[paper_like.frame["flops"] >= 2.18e17]
    x1, x2, x3 = parametric.scaled_inputs(
        points["non_vocab_params"], points["vocab_params"], points["tokens"]
    )
    y = points["loss_u"].to_numpy()

    def objective(p):
        return huber_objective(
            -p[0] + p[1] * x1 ** -p[4] + p[2] * x2 ** -p[5] + p[3] * x3 ** -p[4] - y, 1e-3
        )

    start = np.array([fitted.coefficients[name] for name in parametric.PARAMETERS])
    polished = minimize(
        objective, start, method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-14}
    )
    assert fitted.quality["objective"] == pytest.approx(objective(start), rel=1e-9)
    assert polished.fun >= fitted.quality["objective"] * (1 - 1e-6)
    assert fitted.quality["points"] == len(y)


def test_authors_tokenization_switch(paper_like, fitted, caplog):
    """A table whose losses follow the law in the authors' token counts D = H f(V/1000): the
    compatibility switch recovers the law, reports the true-token fit beside it and says so."""
    frame = paper_like.frame.copy()
    authors_tokens = frame["characters"] * F(frame["vocab_size"] / 1000.0)
    frame["loss_u"] = parametric.loss_u(
        LAW, frame["non_vocab_params"], frame["vocab_params"], authors_tokens
    ) + np.random.default_rng(1).normal(0.0, 0.002, len(frame))
    runs = prepare_runs(frame.drop(columns=["run"]), F)
    with caplog.at_level(logging.WARNING):
        compatible = fit_approach("parametric", runs, F, {"authors_tokenization": True})
    assert compatible.options["authors_tokenization"] is True
    for name in parametric.PARAMETERS:
        assert compatible.coefficients[name] == pytest.approx(LAW[name], rel=0.02), name
    beside = compatible.detail("true_tokenization")
    assert set(beside) >= {*parametric.PARAMETERS, "fit"}
    assert beside["fit"]["objective"] > compatible.quality["objective"]
    assert "compatibility switch" in caplog.text
    assert (
        fitted.detail("true_tokenization") is None
        and fitted.options["authors_tokenization"] is False
    )


def test_vocabulary_that_does_not_help_is_reported(caplog):
    """A2 = 0 (larger V never lowers the loss at fixed tokens): A2 ends on its bound and the
    prediction on the smallest V searched, and both say so."""
    law = {**LAW, "A2": 0.0}
    frame = synthetic.runs_table(synthetic.parametric_law(law), noise=0.002, seed=2)
    with caplog.at_level(logging.WARNING):
        degenerate = fit_approach("parametric", prepare_runs(frame, F), F)
    assert "A2" in degenerate.quality["on_bound"]
    assert "A2 ended at 0" in caplog.text
    vocab_size, at_bound = parametric.optimal_vocab(degenerate.coefficients, 302e6, 1024, 1e20)
    assert at_bound
    assert vocab_size == pytest.approx(parametric.PREDICTION_VOCAB[0], rel=1e-3)
    published = Estimates.from_json(PAPER_COEFFICIENTS).replace("derivative", None)
    estimates = published.replace("parametric", ApproachResult("parametric", degenerate))
    table = predictions_table(estimates, [{"nnv": 302e6, "d_model": 1024}])
    flagged = table.set_index("approach")["at_search_bound"]
    assert flagged["parametric"] and not flagged["isoflops"]


def test_too_few_points_or_sizes_is_a_clear_error(paper_like):
    with pytest.raises(RunsTableError, match=r"0 rows have C >= 1e\+25 FLOPs.*min_flops"):
        fit_approach("parametric", paper_like, F, {"min_flops": 1e25})
    one_model = synthetic.runs_table(synthetic.parametric_law(LAW), synthetic.paper_models(1))
    with pytest.raises(RunsTableError, match="one of the model sizes"):
        fit_approach("parametric", prepare_runs(one_model, F), F, {"min_flops": 0})
