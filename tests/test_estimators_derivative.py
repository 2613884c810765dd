"""Approach 2: the stationary point of C(V), the exponent of the paper, and the anchor."""

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from vocabscale.accounting import width_for_nnv
from vocabscale.config import defaults
from vocabscale.estimate import anchor, derivative, isoflops, parametric, synthetic
from vocabscale.estimate.anchor import empirical_anchor
from vocabscale.estimate.approaches import fit_approach
from vocabscale.estimate.fit import estimate_approach
from vocabscale.estimate.published import PAPER_COEFFICIENTS
from vocabscale.runs.table import RunsTableError, prepare_runs
from vocabscale.tokens_per_char import PAPER_TOKENS_PER_CHAR, TokensPerChar

F = PAPER_TOKENS_PER_CHAR
PAPER_NNV = [33e6, 85e6, 151e6, 302e6, 631e6, 1.13e9, 2.87e9]
LAW = PAPER_COEFFICIENTS["parametric"]


@pytest.mark.parametrize(("nnv", "d_model"), [(33e6, 512), (302e6, 1024), (2.87e9, 3200)])
def test_stationary_point_minimises_compute_per_character(nnv, d_model):
    """Cross-check brentq on dC/dV against minimising (Nnv + V d) f(V) directly."""
    direct = minimize_scalar(
        lambda log_v: (nnv + np.exp(log_v) * d_model) * F(np.exp(log_v)),
        bounds=(np.log(1e3), np.log(1.9e5)),
        method="bounded",
        options={"xatol": 1e-10},
    )
    assert derivative.compute_optimal_vocab(nnv, d_model, F) == pytest.approx(
        np.exp(direct.x), rel=1e-6
    )


def test_paper_exponent_is_reproduced():
    """Paper f(V), paper widths, the paper's seven Nnv, the line through the anchor model
    (33M, d = 512): the published 0.8353974."""
    fit = derivative.fit_exponent(PAPER_NNV, width_for_nnv, F, 1e-3, through=(33e6, 512))
    assert fit["gamma"] == pytest.approx(PAPER_COEFFICIENTS["derivative"]["gamma"], abs=1e-3)
    # the same solutions fitted with a free intercept, reported beside it
    assert fit["gamma_free_intercept"] == pytest.approx(0.8339, abs=1e-3)
    assert fit["gamma_least_squares"] == pytest.approx(0.8246, abs=1e-3)
    free = derivative.fit_exponent(PAPER_NNV, width_for_nnv, F, 1e-3)
    assert free["gamma"] == fit["gamma_free_intercept"]
    assert [s["d_model"] for s in fit["solutions"]] == [512, 768, 768, 1024, 1536, 2048, 3200]


def test_paper_prediction_follows_from_reproduced_exponent():
    """Anchored at the published anchor, the reproduced gamma gives the published 7B answer."""
    fit = derivative.fit_exponent(PAPER_NNV, width_for_nnv, F, 1e-3, through=(33e6, 512))
    coefficients = {"gamma": fit["gamma"], "anchor": PAPER_COEFFICIENTS["derivative"]["anchor"]}
    assert derivative.predict_vocab_params(coefficients, 7e9) / 4096 == pytest.approx(
        67_450, rel=0.005
    )


def test_defaults_on_the_paper_grid_give_the_published_approach_2():
    """All defaults (grid = the trained models' exact Nnv, widths from the runs, line through
    the smallest model) on the paper's seven models and ten vocabularies, with L_u from the
    published approach-3 law: the published gamma, and the published anchor V = 6144."""
    frame = synthetic.runs_table(synthetic.parametric_law(LAW), synthetic.paper_models(7))
    runs = prepare_runs(frame, F)
    paper_like = {"anchor_method": "argmin", "anchor_budget": "largest_common"}
    fitted = fit_approach("derivative", runs, F, paper_like)
    assert fitted.coefficients["gamma"] == pytest.approx(
        PAPER_COEFFICIENTS["derivative"]["gamma"], abs=1e-3
    )
    assert fitted.coefficients["anchor"]["vocab_size"] == 6144
    assert fitted.coefficients["anchor"]["flops"] == pytest.approx(2.7e17, rel=0.1)
    # the default anchor, the vertex of L_u over ln V at the smallest model's compute-optimal
    # budget, finds the law's own optimum there between the swept V (the argmin can only name
    # one of them)
    vertex = fit_approach("derivative", runs, F).coefficients["anchor"]
    assert vertex["budget_rule"] == "compute_optimal"
    anchor_nnv, budget = vertex["nnv"], vertex["flops"]
    truth = minimize_scalar(
        lambda log_v: parametric.loss_u(
            LAW, anchor_nnv, np.exp(log_v) * 512, budget / (6 * (anchor_nnv + np.exp(log_v) * 512))
        ),
        bounds=(np.log(4096), np.log(96256)),
        method="bounded",
    )
    assert vertex["vocab_size"] == pytest.approx(np.exp(truth.x), rel=0.03)
    assert vertex["best_swept_vocab_size"] == 6144 and not vertex["outside_sweep"]


@pytest.fixture(scope="module")
def paper_like_runs():
    frame = synthetic.runs_table(synthetic.parametric_law(LAW), noise=0.002, seed=3)
    return prepare_runs(frame, F)


def test_anchor_is_the_best_trained_vocabulary_of_the_smallest_model(paper_like_runs):
    runs = paper_like_runs
    found = empirical_anchor(runs)
    smallest = runs.frame[runs.frame["non_vocab_params"] == runs.frame["non_vocab_params"].min()]
    # default budget: the largest that every vocabulary's run of the smallest model reaches
    assert found["flops"] == pytest.approx(smallest.groupby("run")["flops"].max().min())
    # the true law at that budget (tokens = C / 6N) picks the same V among those trained
    nnv, d_model = found["nnv"], found["d_model"]
    vocab = np.sort(smallest["vocab_size"].unique()).astype(float)
    tokens = found["flops"] / (6 * (nnv + vocab * d_model))
    true_best = vocab[np.argmin(synthetic.parametric_law(LAW)(nnv, vocab * d_model, tokens, None))]
    assert found["vocab_size"] == true_best
    assert found["vocab_params"] == true_best * d_model
    assert found["at_sweep_edge"] is (true_best in (vocab[0], vocab[-1]))
    with pytest.raises(RunsTableError, match="outside"):
        empirical_anchor(runs, budget=1e25)


def test_estimate_records_options_and_widths(paper_like_runs):
    runs = paper_like_runs
    fitted = fit_approach("derivative", runs, F)
    assert fitted.options["nnv_grid_source"] == "trained models"
    assert fitted.options["grid_widths"] == "runs"
    assert fitted.options["exponent_through_anchor"] is True
    trained = runs.frame.groupby("non_vocab_params")["d_model"].first()
    solved = {s["nnv"]: s["d_model"] for s in fitted.detail("exponent_fit")["solutions"]}
    assert solved == pytest.approx(trained.to_dict())
    through = fitted.detail("exponent_fit")["through"]
    assert (through["nnv"], through["d_model"]) == (fitted.coefficients["anchor"]["nnv"], 512)
    # an explicit anchor replaces the runs' one, and is recorded as given
    given = fit_approach(
        "derivative",
        runs,
        F,
        {
            "nnv_grid": PAPER_NNV,
            "anchor_nnv": 33e6,
            "anchor_vocab_size": 6144,
            "anchor_d_model": 512,
        },
    )
    assert given.coefficients["anchor"]["source"] == "given"
    assert given.coefficients["anchor"]["vocab_params"] == 3_145_728
    assert given.options["nnv_grid_source"] == "given"


def test_paper_widths_are_wrong_for_tiny_models():
    """Below 50M the paper's mapping gives d = 512 whatever the size; the widths learnt from the
    runs follow the models. With the f(V) of the embedded default's tokenizers, d = 512 makes
    Nv grow faster than Nnv (gamma > 1), the learnt widths do not."""
    f = TokensPerChar(a=0.0877, b=-1.375, c=5.69)
    models = synthetic.smooth_models(4, 5e4, 4e5, 20.0)
    frame = synthetic.runs_table(synthetic.parametric_law(LAW), models, (320, 640, 1280, 2560), 5)
    runs = prepare_runs(frame, f)
    learnt = fit_approach("derivative", runs, f)
    paper = fit_approach("derivative", runs, f, {"grid_widths": "paper"})
    assert {s["d_model"] for s in paper.detail("exponent_fit")["solutions"]} == {512}
    widths = [s["d_model"] for s in learnt.detail("exponent_fit")["solutions"]]
    assert widths == pytest.approx([m.d_model for m in models])
    assert paper.coefficients["gamma"] > 1 > learnt.coefficients["gamma"]
    assert paper.options["grid_widths"] == "paper"


def test_too_few_vocabularies_for_the_anchor_is_a_clear_error():
    frame = synthetic.runs_table(synthetic.parametric_law(LAW), synthetic.paper_models(2), (4096,))
    with pytest.raises(RunsTableError, match="1 vocabulary size"):
        fit_approach("derivative", prepare_runs(frame, F), F)


def smallest_model_range(runs) -> tuple[float, float]:
    model = runs.frame[runs.frame["non_vocab_params"] == runs.frame["non_vocab_params"].min()]
    return anchor.common_budget_range(model)


def test_anchor_is_read_at_the_smallest_models_compute_optimal_budget(paper_like_runs):
    """By default the anchor budget is C = (Nnv / e^K1)^(1/a) of the smallest model under
    approach 1 fitted on the same runs, and its V is what the runs say at that budget;
    `largest_common` and an explicit anchor_flops read elsewhere."""
    runs = paper_like_runs
    fitted = fit_approach("derivative", runs, F).coefficients["anchor"]
    approach_1 = fit_approach("isoflops", runs, F).coefficients
    expected = isoflops.optimal_flops(approach_1, fitted["nnv"])
    low, high = smallest_model_range(runs)
    assert low < expected < high  # inside: read as it is, not held
    assert fitted["budget_rule"] == "compute_optimal" and fitted["budget_clamped"] is None
    assert fitted["compute_optimal_flops"] == pytest.approx(expected, rel=1e-6)
    assert fitted["flops"] == fitted["compute_optimal_flops"]
    assert fitted["compute_optimal_K1"] == pytest.approx(approach_1["K1"], abs=1e-6)
    at_budget = fit_approach("derivative", runs, F, {"anchor_flops": expected})
    assert at_budget.coefficients["anchor"]["vocab_size"] == pytest.approx(fitted["vocab_size"])
    assert at_budget.coefficients["anchor"]["budget_rule"] == "given"
    largest = fit_approach("derivative", runs, F, {"anchor_budget": "largest_common"})
    assert largest.coefficients["anchor"]["flops"] == pytest.approx(high)
    assert largest.coefficients["anchor"]["vocab_size"] != pytest.approx(fitted["vocab_size"])
    assert largest.options["anchor_budget"] == "largest_common"


def test_approach_1_options_move_the_anchor_budget(paper_like_runs):
    """The anchor's budget follows approach 1's own options (estimate.isoflops), which the
    derivative stage therefore declares."""
    runs = paper_like_runs
    plain = fit_approach("derivative", runs, F, {"isoflops": {"densify": False}})
    dense = fit_approach("derivative", runs, F)
    approach_1 = fit_approach("isoflops", runs, F, {"densify": False}).coefficients
    nnv = plain.coefficients["anchor"]["nnv"]
    wanted = isoflops.optimal_flops(approach_1, nnv)
    assert plain.coefficients["anchor"]["compute_optimal_flops"] == pytest.approx(wanted)
    assert wanted != pytest.approx(dense.coefficients["anchor"]["compute_optimal_flops"])


def test_a_compute_optimal_budget_beyond_the_runs_is_held_to_their_range():
    """When the smallest model's runs stop before its compute-optimal budget, the anchor is
    read at the largest budget they all reach, and the record says it was held there."""
    frame = synthetic.runs_table(synthetic.parametric_law(LAW), noise=0.002, seed=3)
    smallest = frame["non_vocab_params"] == frame["non_vocab_params"].min()
    short = frame[~smallest | (frame["step"] <= 8)]  # the 33M runs stop at 40% of their tokens
    runs = prepare_runs(short, F)
    found = fit_approach("derivative", runs, F).coefficients["anchor"]
    low, high = smallest_model_range(runs)
    assert found["compute_optimal_flops"] > high
    assert found["budget_clamped"] == "above"
    assert found["flops"] == pytest.approx(high)
    assert found["budget_range"] == pytest.approx([low, high])


def test_refits_carry_the_uncertainty_of_the_anchor_budget(paper_like_runs):
    """Each bootstrap refit refits approach 1's relation on its own L_u: the anchor budget
    varies across refits, and the main fit's is the estimate."""
    bootstrap = {"samples": 12, "seed": 0, "confidence": 0.9}
    options = defaults("estimate.derivative")
    result = estimate_approach("derivative", paper_like_runs, F, options, bootstrap)
    budgets = [refit.coefficients["anchor"]["flops"] for refit in result.refits]
    assert len(budgets) == 12 and np.std(np.log(budgets)) > 1e-3
    main = result.fit.coefficients["anchor"]["compute_optimal_flops"]
    assert min(budgets) < main * 1.5 and max(budgets) > main / 1.5


def test_without_approach_1_the_anchor_falls_back_to_the_largest_common_budget(
    paper_like_runs, monkeypatch
):
    def unavailable(*args, **kwargs):
        raise derivative.RunsTableError("the IsoFLOPs envelope has 1 distinct compute level(s)")

    monkeypatch.setattr(derivative, "OptimalBudget", unavailable)
    found = fit_approach("derivative", paper_like_runs, F).coefficients["anchor"]
    assert found["budget_rule"] == "largest_common"
    assert "compute level" in found["compute_optimal_unavailable"]
    assert found["flops"] == pytest.approx(smallest_model_range(paper_like_runs)[1])
