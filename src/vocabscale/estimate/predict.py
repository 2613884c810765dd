"""Predictions from a set of coefficients: the V (and Nv) each approach recommends for a model
with Nnv non-vocabulary parameters, width d and compute budget C, with bootstrap intervals.

Approaches 1 and 2 answer for the compute-optimal budget of that Nnv (C = (Nnv / e^K1)^2 under
approach 1's fit); approach 3 answers for any budget, the compute-optimal one by default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vocabscale.accounting import width_for_nnv
from vocabscale.config import defaults
from vocabscale.estimate import isoflops
from vocabscale.estimate.approaches import APPROACHES
from vocabscale.estimate.bootstrap import RefitValues, interval_of, refit_interval, refit_values
from vocabscale.estimate.published import PAPER_COEFFICIENTS
from vocabscale.estimate.recommend import (
    Recommendation,
    Rule,
    curvature_band,
    distance_from_middle,
    fallback_rule,
    parametric_band,
    recommend,
    round_band,
)
from vocabscale.estimate.results import (
    Answer,
    ApproachResult,
    Estimates,
    Fit,
    Interval,
    Prediction,
)
from vocabscale.io import read_json

#: What the prediction functions accept: typed estimates, or a dict in coefficients.json's
#: layout (the published coefficients are kept as one).
Coefficients = Estimates | dict[str, Any]


def as_estimates(coefficients: Coefficients) -> Estimates:
    return (
        coefficients if isinstance(coefficients, Estimates) else Estimates.from_json(coefficients)
    )


def load_coefficients(spec: str | Path) -> Estimates:
    """`paper`, a coefficients.json, or an estimates directory holding one JSON per approach."""
    if str(spec) == "paper":
        return Estimates.from_json(PAPER_COEFFICIENTS)
    path = Path(spec)
    if path.is_dir():
        if (path / "coefficients.json").exists():
            return Estimates.from_json(read_json(path / "coefficients.json"))
        found = {
            name: read_json(path / f"{name}.json")
            for name in APPROACHES
            if (path / f"{name}.json").exists()
        }
        if not found:
            raise FileNotFoundError(f"{path}: no coefficients.json and no per-approach estimates")
        estimates = Estimates.from_json(found)
        fitted = [found[name] for name in estimates.approaches]
        estimates.tokenization = fitted[0].get("tokenization") if fitted else None
        return estimates
    data = read_json(path)
    if not any(name in data for name in APPROACHES):
        raise ValueError(f"{path}: no {', '.join(APPROACHES)} coefficients in this file")
    return Estimates.from_json(data)


def confidence_of(coefficients: Coefficients) -> float:
    """The level of the bootstrap intervals stored with the coefficients (the params default
    where none is stored, e.g. the published coefficients)."""
    stored = as_estimates(coefficients).confidence
    return float(defaults("estimate.bootstrap.confidence") if stored is None else stored)


def compute_optimal_flops(estimates: Estimates, nnv: float) -> float | None:
    """Approach 1's compute-optimal budget for Nnv, the reference budget of every approach."""
    fit = estimates.fit("isoflops")
    return None if fit is None else isoflops.optimal_flops(fit.coefficients, nnv)


def answer_of(
    estimates: Estimates,
    approach: str,
    fit: Fit,
    model: tuple[float, float],
    budget: float | None,
    optimal: float | None = None,
) -> Answer:
    """What `fit` (a main fit or a refit of `approach`) says for a model (Nnv, d); approach
    1's optimal budget is `optimal`, the main fit's when not given."""
    nnv, d_model = model
    optimal = compute_optimal_flops(estimates, nnv) if optimal is None else optimal
    return APPROACHES[approach].predict(fit.coefficients, nnv, d_model, budget, optimal)


def predict_one(
    coefficients: Coefficients,
    approach: str,
    nnv: float,
    d_model: float,
    flops_budget: float | None,
) -> Answer | None:
    """Nv and V of one approach (None when the coefficient set lacks it)."""
    estimates = as_estimates(coefficients)
    fit = estimates.fit(approach)
    if fit is None:
        return None
    return answer_of(estimates, approach, fit, (nnv, d_model), flops_budget)


def no_answer_reason(fit: Fit, answer: Answer) -> str | None:
    """Why a fit gives no V for this model: it is degenerate (a parameter on its bound, a
    solution at its search bound), or its optimum lies at the edge of the V it searched."""
    if fit.degenerate_reason is not None:
        return f"the fit is degenerate ({fit.degenerate_reason})"
    if answer.at_search_bound:
        edge = answer.edge or "end"
        return f"its optimum is at the {edge} V it searched, a bound and not an optimum"
    return None


@dataclass
class ModelPrediction:
    """Every approach's answer for one model, and the recommendation: what `vocabscale predict
    --json` prints."""

    nnv: float
    d_model: float
    flops: float | None
    compute_optimal_flops: float | None
    approaches: dict[str, Prediction]
    recommended: Recommendation | None = None
    refits: dict[str, RefitValues | None] = field(default_factory=dict)  # V per replicate

    def to_json(self) -> dict[str, Any]:
        approaches = {name: prediction_json(p) for name, p in self.approaches.items()}
        data = {
            "nnv": self.nnv,
            "d_model": self.d_model,
            "flops": self.flops,
            "compute_optimal_flops": self.compute_optimal_flops,
            "approaches": approaches,
        }
        if self.recommended is not None:
            data["recommended"] = self.recommended.to_json()
        return data


def prediction_json(prediction: Prediction) -> dict[str, Any]:
    """One approach's answer as `predict --json` gives it: V null with a reason when there is
    no answer."""
    answer, interval = prediction.answer, prediction.interval
    if prediction.reason is not None:
        return {"vocab_size": None, "flops": answer.flops, "reason": prediction.reason}
    value = {
        "vocab_size": answer.vocab_size,
        "vocab_params": answer.vocab_params,
        "flops": answer.flops,
        "vocab_size_interval": None,
    }
    if interval is not None and interval.available:
        value["vocab_size_interval"] = [float(interval.low), float(interval.high)]
        value["confidence"] = prediction.confidence
        value["refits_excluded_share"] = interval.excluded_share
    return value


def check_positive(**values: float | None) -> None:
    for name, value in values.items():
        if value is not None and not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive finite number, not {value!r}")


def predict(
    coefficients: Coefficients,
    nnv: float,
    d_model: float | None = None,
    flops_budget: float | None = None,
    intervals: bool = False,
) -> ModelPrediction:
    """The answer of every approach for one model, and with `intervals` each one's bootstrap
    interval and the recommendation; d defaults to the paper's width for Nnv, the budget to
    approach 1's optimum (then approach 1's refits carry its uncertainty into approach 3)."""
    check_positive(nnv=nnv, d_model=d_model, flops=flops_budget)
    estimates = as_estimates(coefficients)
    d_model = width_for_nnv(nnv) if d_model is None else d_model
    optimal = compute_optimal_flops(estimates, nnv)
    budget = flops_budget if flops_budget is not None else optimal
    confidence = confidence_of(estimates)
    predictions, refits = {}, {}
    for name, result in estimates.approaches.items():
        answer = answer_of(estimates, name, result.fit, (nnv, d_model), budget)
        interval = values = None
        if intervals:
            values = refit_values(result, vocab_of(estimates, name, (nnv, d_model), flops_budget))
            interval = None if values is None else _as_floats(interval_of(values, confidence))
        reason = no_answer_reason(result.fit, answer)
        predictions[name] = Prediction(
            name, result.method or "", answer, interval, confidence, reason
        )
        refits[name] = values
    prediction = ModelPrediction(nnv, d_model, budget, optimal, predictions, refits=refits)
    if intervals:
        prediction.recommended = recommendation_for(estimates, prediction, confidence)
    return prediction


def _as_floats(interval: Interval | None) -> Interval | None:
    if interval is None or not interval.available:
        return interval
    return replace(interval, low=float(interval.low), high=float(interval.high))


def paired_optimal(estimates: Estimates, nnv: float) -> Callable[[Fit, Fit], float | None]:
    """Approach 1's optimal budget for Nnv as the refit of the same replicate table found it
    (the main fit's for the main fit, the reference's for the reference), so that approach
    1's uncertainty is carried into what is read at its budget. None where that refit is
    missing or flagged."""
    isoflops_result = estimates.fitted("isoflops")
    if isoflops_result is None:
        return lambda fit, main: None
    partners = {refit.replicate: refit for refit in isoflops_result.refits}

    def optimal(fit: Fit, main: ApproachResult) -> float | None:
        if fit is main.fit:
            partner = isoflops_result.fit
        elif fit is main.reference:
            partner = isoflops_result.reference
        else:
            partner = partners.get(fit.replicate)
        if partner is None or partner.flagged:
            return None
        return isoflops.optimal_flops(partner.coefficients, nnv)

    return optimal


def vocab_of(
    estimates: Estimates, approach: str, model: tuple[float, float], flops_budget: float | None
) -> Callable[[Fit], float | None]:
    """V of a fit for one model (Nnv, d), as an interval's value: None when it fails, is not
    finite or lies at the edge of the V searched. At the compute-optimal budget (no
    `flops_budget`), the reference and each refit are read at the budget their paired
    approach-1 fit finds."""
    result = estimates.fitted(approach)
    optimal_of = paired_optimal(estimates, model[0])
    main_optimal = compute_optimal_flops(estimates, model[0])

    def value(fit: Fit) -> float | None:
        optimal = main_optimal
        paired = fit is result.reference or fit.replicate is not None
        if flops_budget is None and paired and fit is not result.fit:
            optimal = optimal_of(fit, result)
            if optimal is None and main_optimal is not None:
                return None
        budget = flops_budget if flops_budget is not None else optimal
        try:
            answer = answer_of(estimates, approach, fit, model, budget, optimal)
        except (ValueError, KeyError, FloatingPointError):
            return None
        if not np.isfinite(answer.vocab_size) or answer.at_search_bound:
            return None
        return float(answer.vocab_size)

    return value


def bootstrap_interval(
    coefficients: Coefficients,
    approach: str,
    nnv: float,
    d_model: float,
    flops_budget: float | None,
    confidence: float,
) -> Interval | None:
    """The interval of V for one model over the approach's bootstrap refits (at
    `flops_budget`, or the compute-optimal budget of each paired approach-1 refit); None
    without refits."""
    estimates = as_estimates(coefficients)
    result = estimates.fitted(approach)
    if result is None:
        return None
    value = vocab_of(estimates, approach, (nnv, d_model), flops_budget)
    return _as_floats(refit_interval(result, value, confidence))


def rule_of(estimates: Estimates) -> Rule:
    """The recommendation's rule: the backtest's, else the stated fallback."""
    if estimates.backtest is None:
        return fallback_rule("no backtest was given")
    return Rule.from_json(estimates.backtest["rule"])


def band_tolerance(estimates: Estimates) -> float | None:
    """The loss difference the flat band allows: the seed-to-seed spread of L_u the runs
    show (the backtest's noise model, else an approach's); where they show none beyond their
    checkpoint noise, that noise, the smallest difference they resolve; None when unknown."""
    sources = [estimates.backtest or {}] + [
        result.bootstrap.noise
        for result in estimates.approaches.values()
        if result.bootstrap and result.bootstrap.noise
    ]
    for key in ("seed_sd", "checkpoint_sd"):
        for source in sources:
            if source.get(key):
                return float(source[key])
    return None


def flat_band(
    estimates: Estimates, prediction: ModelPrediction, vocab_size: float, tolerance: float
) -> tuple[float, float] | None:
    """The V around `vocab_size` whose loss is within `tolerance` of the optimum's: the shape
    of approach 3's loss at this budget when it answers, else the curvature of the largest
    model's runs (the backtest's)."""
    parametric_fit = estimates.fit("parametric")
    shape = None
    answer = prediction.approaches.get("parametric")
    if parametric_fit is not None and answer is not None and answer.vocab_size is not None:
        shape = parametric_band(
            parametric_fit.coefficients,
            prediction.nnv,
            prediction.d_model,
            prediction.flops,
            tolerance,
        )
    curvature = (estimates.backtest or {}).get("curvature")
    if shape is None and curvature:
        shape = curvature_band(curvature["value"], tolerance)
    return None if shape is None else (vocab_size * shape[0], vocab_size * shape[1])


def recommendation_for(
    estimates: Estimates,
    prediction: ModelPrediction,
    confidence: float,
    round_to: int | None = None,
    tolerance: float | None = None,
) -> Recommendation:
    """The recommended V for this model: the rule over the approaches that answer for its
    budget, its interval, and the flat band rounded to `round_to` (params' report.round_to
    by default), the band's tolerance the runs' seed-to-seed spread unless given."""
    backtest = estimates.backtest or {}
    distance = None
    if backtest.get("flops_range") and prediction.flops:
        distance = distance_from_middle(prediction.flops, tuple(backtest["flops_range"]))
    rule = rule_of(estimates)
    found = recommend(
        prediction.approaches, rule, prediction.flops, distance, confidence, prediction.refits
    )
    tolerance = band_tolerance(estimates) if tolerance is None else tolerance
    if found.vocab_size is None or not tolerance:
        return found
    band = flat_band(estimates, prediction, found.vocab_size, tolerance)
    if band is None:
        return found
    multiple = int(defaults("report.round_to") if round_to is None else round_to)
    return replace(found, band=round_band(*band, found.vocab_size, multiple))


#: The approach name of the recommendation's rows in every table.
RECOMMENDED = "recommended"


def prediction_row(prediction: Prediction) -> dict[str, Any]:
    """One approach's columns of predictions.csv: no V (NaN) and the reason when it gives no
    answer."""
    value, interval = prediction.answer, prediction.interval
    answered = prediction.vocab_size is not None
    has_interval = answered and interval is not None and interval.available
    return {
        "approach": prediction.approach,
        "method": prediction.method,
        "flops": value.flops,
        "vocab_size": value.vocab_size if answered else np.nan,
        "vocab_params": value.vocab_params if answered else np.nan,
        "vocab_size_low": interval.low if has_interval else np.nan,
        "vocab_size_high": interval.high if has_interval else np.nan,
        "refits": interval.refits if interval else 0,
        "refits_excluded_share": interval.excluded_share if interval else np.nan,
        "at_search_bound": value.at_search_bound,
        "reason": prediction.reason or "",
    }


def recommendation_row(found: Recommendation, d_model: float) -> dict[str, Any]:
    answered = found.vocab_size is not None
    band = found.band or (np.nan, np.nan)
    return {
        "approach": RECOMMENDED,
        "method": "",
        "flops": found.flops,
        "vocab_size": found.vocab_size if answered else np.nan,
        "vocab_params": found.vocab_size * d_model if answered else np.nan,
        "vocab_size_low": found.low,
        "vocab_size_high": found.high,
        "band_low": band[0],
        "band_high": band[1],
        "rule": found.rule,
        "reason": found.reason or "",
    }


def predictions_table(
    coefficients: Coefficients,
    targets: list[dict[str, Any]],
    round_to: int | None = None,
    tolerance: float | None = None,
) -> pd.DataFrame:
    """One row per target and approach: V, Nv, budget and bootstrap interval of V, with the
    share of refits the interval left out, or the reason it gives no answer; and one row per
    target for the recommendation, with its band and rule."""
    estimates = as_estimates(coefficients)
    confidence = confidence_of(estimates)
    rows = []
    for target in targets:
        d_model = target.get("d_model") or width_for_nnv(target["nnv"])
        answer = predict(estimates, target["nnv"], d_model, target.get("flops"), intervals=True)
        answer.recommended = recommendation_for(estimates, answer, confidence, round_to, tolerance)
        where = {
            "target": target.get("name", f"{target['nnv']:.3g}"),
            "nnv": target["nnv"],
            "d_model": d_model,
        }
        rows += [{**where, **prediction_row(p)} for p in answer.approaches.values()]
        rows.append({**where, **recommendation_row(answer.recommended, d_model)})
    return pd.DataFrame(rows)


def predictions_with_methods(
    coefficients: Coefficients, targets: list[dict[str, Any]]
) -> pd.DataFrame:
    """predictions_table of the coefficients, and of the other method's when it was fitted."""
    estimates = as_estimates(coefficients)
    tables = [predictions_table(estimates, targets)]
    other = estimates.other_method()
    if other is not None:
        table = predictions_table(other, targets)
        tables.append(table[table["approach"] != RECOMMENDED])
    return pd.concat(tables, ignore_index=True)
