"""What each figure of the report draws, computed from the evidence: model curves, bands and
the points they are read at. Each function takes the `Evidence` and returns one figure's data,
or raises `Skipped` saying what is missing; the figures (`figures`) only draw what they get."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from vocabscale.accounting import log_spaced, width_for_nnv
from vocabscale.estimate import parametric
from vocabscale.estimate.approaches import APPROACHES
from vocabscale.estimate.bootstrap import refit_interval
from vocabscale.estimate.isoflops import optimal_flops
from vocabscale.estimate.predict import RECOMMENDED, compute_optimal_flops, predict_one
from vocabscale.estimate.published import PAPER_COEFFICIENTS
from vocabscale.estimate.results import Estimates, Fit, Interval
from vocabscale.report.evidence import (
    Evidence,
    Skipped,
    downstream_metric,
    downstream_predictions,
    isoflops_envelope,
)
from vocabscale.tokens_per_char import (
    PAPER_TOKENS_PER_CHAR,
    TOKENS_PER_CHAR_MAX_VOCAB,
    TokensPerChar,
)

#: A curve: x and y.
Curve = tuple[np.ndarray, np.ndarray]


# --- the data --------------------------------------------------------------------------------


@dataclass
class TokensPerCharCurves:
    points: pd.DataFrame | None  # measured vocab_size, tokens_per_character
    points_source: str
    f: TokensPerChar | None
    source: str  # where the f the estimators used came from
    fitted: Curve | None  # f over the measured V
    beyond: Curve | None  # f extrapolated above them
    below: Curve | None  # and below
    paper: Curve
    clamp_shown: bool  # the axis reaches f's clamp at 200K


def tokens_per_char_curves(evidence: Evidence) -> TokensPerCharCurves:
    """f(V) over the measured V, extrapolated to the predicted V, and the paper's fit."""
    f, points = evidence.tokens_per_char, evidence.tokenization_points
    if f is None and points is None:
        raise Skipped("needs f(V) coefficients or measured tokens per character")
    measured_low, measured_high = None, None
    if points is not None and not points.empty:
        measured_low, measured_high = points["vocab_size"].min(), points["vocab_size"].max()
    predicted = evidence.predictions["vocab_size"].to_numpy(float)
    predicted = predicted[np.isfinite(predicted)]
    low = (measured_low or float(np.min(predicted, initial=4096))) / 1.5
    high = max(measured_high or 0.0, float(np.max(predicted, initial=0.0))) * 1.2
    if high <= low * 2:
        high = low * 10
    fitted = beyond = below = None
    if f is not None:
        inside_low, inside_high = measured_low or low, measured_high or high
        grid = log_spaced(inside_low, inside_high, 200)
        fitted = (grid, f(grid))
        if high > inside_high * 1.01:
            grid = log_spaced(inside_high, high, 200)
            beyond = (grid, f(grid))
        if low < inside_low * 0.99:
            grid = log_spaced(low, inside_low, 50)
            below = (grid, f(grid))
    grid = log_spaced(low, high, 300)
    return TokensPerCharCurves(
        points,
        evidence.tokenization_points_source,
        f,
        (evidence.estimates.tokenization or {}).get("source", ""),
        fitted,
        beyond,
        below,
        (grid, PAPER_TOKENS_PER_CHAR(grid)),
        high > TOKENS_PER_CHAR_MAX_VOCAB,
    )


@dataclass
class RunsData:
    runs: pd.DataFrame
    diverged: pd.DataFrame | None


def runs_data(evidence: Evidence) -> RunsData:
    return RunsData(evidence.need_runs(), evidence.diverged)


@dataclass
class DownstreamData:
    table: pd.DataFrame
    metric: str
    predicted: pd.DataFrame  # each approach's V per model


def downstream_data(evidence: Evidence) -> DownstreamData:
    table = evidence.need_downstream()
    return DownstreamData(table, downstream_metric(table), downstream_predictions(evidence))


# --- approach 1 ------------------------------------------------------------------------------


@dataclass
class EnvelopeData:
    envelope: pd.DataFrame
    runs: pd.DataFrame | None
    densified: bool


def envelope_data(evidence: Evidence) -> EnvelopeData:
    envelope = isoflops_envelope(evidence)
    densified = bool(evidence.need("isoflops").fit.options.get("densify"))
    return EnvelopeData(envelope, evidence.runs, densified)


@dataclass
class PowerLawPanel:
    column: str  # the envelope's column
    label: str
    symbol: str
    intercept: float
    slope: float
    line: np.ndarray  # over the grid
    band: Interval | None  # over the grid, from the refits


@dataclass
class PowerLaws:
    envelope: pd.DataFrame
    grid: np.ndarray
    fitted_range: tuple[float, float]
    targets: pd.DataFrame  # approach 1's predictions
    confidence: float
    refits: int
    panels: list[PowerLawPanel]


#: (envelope column, intercept, exponent, axis label, symbol) of approach 1's three laws.
POWER_LAWS = (
    ("non_vocab_params", "K1", "nnv_exponent", "non-vocabulary params Nnv", "Nnv"),
    ("vocab_params", "K2", "gamma", "vocabulary params Nv = V d", "Nv"),
    ("characters", "K3", "characters_exponent", "training characters H", "H"),
)


def power_law_line(key: str, exponent: str, grid: np.ndarray) -> Callable[[Fit], Any]:
    """e^K C^e of one law over the grid, for any fit (None when it lacks the law)."""

    def line(fit: Fit) -> np.ndarray | None:
        intercept, slope = fit.coefficient(key), fit.coefficient(exponent, 0.5)
        if intercept is None or slope is None:
            return None
        with np.errstate(over="ignore"):
            return np.exp(intercept) * grid**slope

    return line


def power_laws(evidence: Evidence) -> PowerLaws:
    """Approach 1's laws over the fitted compute and on to the targets, with bootstrap bands."""
    result = evidence.need("isoflops")
    fit, envelope = result.fit, isoflops_envelope(evidence)
    low, high = fit.detail("flops_range") or [envelope["flops"].min(), envelope["flops"].max()]
    rows = evidence.predictions[evidence.predictions["approach"] == "isoflops"]
    reach = max(high, float(rows["flops"].max()) if not rows.empty else high) * 1.5
    grid = log_spaced(low / 1.5, reach, 200)
    panels = []
    for column, key, exponent, label, symbol in POWER_LAWS:
        if fit.coefficient(key) is None:
            continue
        slope = float(fit.coefficient(exponent) or 0.5)
        line = np.exp(fit.coefficients[key]) * grid**slope
        band = refit_interval(result, power_law_line(key, exponent, grid), evidence.confidence)
        band = band if band is not None and band.available else None
        panels.append(
            PowerLawPanel(column, label, symbol, fit.coefficients[key], slope, line, band)
        )
    return PowerLaws(
        envelope, grid, (low, high), rows, evidence.confidence, len(result.refits), panels
    )


# --- approach 3 ------------------------------------------------------------------------------


def parametric_tokens(fit: Fit, runs: pd.DataFrame, f: TokensPerChar | None) -> np.ndarray:
    """The D the parametric fit saw: true tokens, or H f(V/1000) under the compatibility switch."""
    if fit.options.get("authors_tokenization") and f is not None:
        return runs["characters"].to_numpy(float) * f(runs["vocab_size"].to_numpy(float) / 1000)
    return runs["tokens"].to_numpy(float)


@dataclass
class ParametricFitData:
    runs: pd.DataFrame
    observed: np.ndarray
    predicted: np.ndarray  # the law's L_u at every checkpoint
    fitted: np.ndarray  # the rows at or above the fit's compute threshold
    min_flops: float
    quality: dict[str, Any]
    authors_tokenization: bool


def parametric_fit_data(evidence: Evidence) -> ParametricFitData:
    fit = evidence.need("parametric").fit
    runs = evidence.need_runs()
    predicted = parametric.loss_u(
        fit.coefficients,
        runs["non_vocab_params"].to_numpy(float),
        runs["vocab_params"].to_numpy(float),
        parametric_tokens(fit, runs, evidence.tokens_per_char),
    )
    min_flops = float(fit.options.get("min_flops", 0.0))
    return ParametricFitData(
        runs,
        runs["loss_u"].to_numpy(float),
        predicted,
        runs["flops"].to_numpy(float) >= min_flops,
        min_flops,
        fit.quality,
        bool(fit.options.get("authors_tokenization")),
    )


def budget_reference(evidence: Evidence, target: dict[str, Any]) -> float | None:
    """The 1x budget of a target: approach 1's compute-optimal one, else the target's own."""
    isoflops = evidence.fit("isoflops")
    if isoflops is not None:
        return optimal_flops(isoflops.coefficients, target["nnv"])
    return target.get("flops")


@dataclass
class BudgetCurve:
    index: int  # the target's place among all targets (its colour)
    name: str
    values: np.ndarray  # optimal V at each multiple
    at_edge: np.ndarray  # where it lies at the edge of the V search
    own: tuple[float, float] | None  # (multiple, V) at the target's own budget


@dataclass
class BudgetCurves:
    multiples: np.ndarray
    curves: list[BudgetCurve]
    targets: int
    compute_optimal: bool  # 1x is approach 1's optimum (else the target's own budget)


def budget_curves(evidence: Evidence) -> BudgetCurves:
    """Approach 3's optimal V for each target from under- to over-trained."""
    evidence.need("parametric")
    multiples = log_spaced(*sorted(evidence.settings["budget_range"]), 41)
    optimal = evidence.fitted("isoflops") is not None
    curves = []
    for index, target in enumerate(evidence.targets):
        reference = budget_reference(evidence, target)
        if reference is None:
            continue
        answers = [
            predict_one(
                evidence.estimates, "parametric", target["nnv"], target["d_model"], m * reference
            )
            for m in multiples
        ]
        own = None
        if target.get("flops") and optimal:
            answer = predict_one(
                evidence.estimates, "parametric", target["nnv"], target["d_model"], target["flops"]
            )
            own = (
                None if answer.at_search_bound else (target["flops"] / reference, answer.vocab_size)
            )
        edges = np.asarray([a.at_search_bound for a in answers])
        values = np.asarray([np.nan if a.at_search_bound else a.vocab_size for a in answers])
        curves.append(BudgetCurve(index, target["name"], values, edges, own))
    if not curves:
        raise Skipped("needs a compute-optimal budget (approach 1) or targets with `flops`")
    if all(np.isnan(curve.values).all() for curve in curves):
        raise Skipped(
            "approach 3 gives no answer for any target at any budget: its optimum always lies "
            "at the edge of the V it searched"
        )
    return BudgetCurves(multiples, curves, len(evidence.targets), optimal)


# --- all approaches --------------------------------------------------------------------------


def width_curve(pairs: list[tuple[float, float]]) -> Callable[[np.ndarray], np.ndarray]:
    """d as a function of Nnv: a power law through the known (Nnv, d) pairs (smooth, so the
    curves show the approaches and not the widths), the paper's mapping when fewer than two."""
    known = sorted({(float(n), float(d)) for n, d in pairs})
    if len({n for n, _ in known}) < 2:
        return lambda nnv: np.array([width_for_nnv(n) for n in np.atleast_1d(nnv)], float)
    slope, intercept = np.polyfit(np.log([n for n, _ in known]), np.log([d for _, d in known]), 1)
    return lambda nnv: np.exp(intercept + slope * np.log(nnv))


def vocab_params_curve(estimates: Estimates, approach: str, grid: np.ndarray, width) -> np.ndarray:
    """Nv of one approach over a grid of Nnv, at approach 1's optimal budget (NaN where it
    gives no answer: a degenerate fit, an optimum at the edge of its search)."""
    fit = estimates.fit(approach)
    if fit is None or fit.degenerate_reason is not None:
        return np.full(len(grid), np.nan)
    values = []
    for nnv, d in zip(grid, width(grid)):
        budget = compute_optimal_flops(estimates, nnv)
        try:
            answer = predict_one(estimates, approach, nnv, d, budget)
        except (ValueError, KeyError):
            answer = None
        values.append(answer.vocab_params if answer and not answer.at_search_bound else np.nan)
    return np.asarray(values, float)


@dataclass
class VocabCurves:
    grid: np.ndarray
    curves: dict[str, tuple[np.ndarray, np.ndarray]]  # approach: (fitted, published) Nv
    sweep: pd.Series | None  # Nv of every trained (Nnv, V)
    targets: pd.DataFrame  # the fitted approaches' predictions
    public_models: list[dict[str, Any]]
    nnv_range: tuple[float, float]
    compute_optimal: bool  # read at approach 1's optimal budget


def vocab_curves(evidence: Evidence) -> VocabCurves:
    """Nv against Nnv for every fitted approach and the published coefficients."""
    approaches = [a for a in APPROACHES if evidence.fitted(a)]
    if not approaches:
        raise Skipped("no approach was fitted")
    pairs = [(t["nnv"], t["d_model"]) for t in evidence.targets]
    nnv_values = [t["nnv"] for t in evidence.targets] + [m["nnv"] for m in evidence.public_models]
    sweep = None
    if evidence.runs is not None:
        models = evidence.runs.groupby("non_vocab_params")["d_model"].first()
        pairs += list(models.items())
        nnv_values += list(models.index)
        sweep = evidence.runs.groupby(["non_vocab_params", "vocab_size"])["vocab_params"].first()
    width = width_curve(pairs)
    grid = log_spaced(min(nnv_values) / 2, max(nnv_values) * 2, 80)
    published = Estimates.from_json(PAPER_COEFFICIENTS)
    curves = {
        a: (
            vocab_params_curve(evidence.estimates, a, grid, width),
            vocab_params_curve(published, a, grid, width),
        )
        for a in approaches
    }
    shown = [*approaches, RECOMMENDED]
    targets = evidence.predictions[evidence.predictions["approach"].isin(shown)]
    return VocabCurves(
        grid,
        curves,
        sweep,
        targets,
        evidence.public_models,
        (min(nnv_values), max(nnv_values)),
        evidence.fitted("isoflops") is not None,
    )


def backtest_points(evidence: Evidence) -> pd.DataFrame:
    """The backtest's comparisons that have both a prediction and a truth."""
    table = evidence.backtest
    if table is None or table.empty:
        raise Skipped("no backtest was given")
    if "ln_ratio" not in table or table["ln_ratio"].notna().sum() == 0:
        raise Skipped("no held-out run could be compared with a prediction")
    return table.dropna(subset=["ln_ratio"]).reset_index(drop=True)
