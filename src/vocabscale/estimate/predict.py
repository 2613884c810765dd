"""Predictions from a set of coefficients: the V (and Nv) each approach recommends for a model
with Nnv non-vocabulary parameters, width d and compute budget C, with bootstrap intervals.

Approaches 1 and 2 answer for the compute-optimal budget of that Nnv (C = (Nnv / e^K1)^2 under
approach 1's fit); approach 3 answers for any budget, the compute-optimal one by default.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vocabscale.accounting import width_for_nnv
from vocabscale.config import defaults
from vocabscale.estimate import isoflops
from vocabscale.estimate.approaches import APPROACHES
from vocabscale.estimate.bootstrap import refit_interval
from vocabscale.estimate.published import PAPER_COEFFICIENTS
from vocabscale.estimate.results import Answer, Estimates, Fit, Interval, Prediction
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
    estimates: Estimates, approach: str, fit: Fit, nnv: float, d_model: float, budget
) -> Answer:
    """What `fit` (a main fit or a refit of `approach`) says for one model; approach 1's
    optimal budget comes from the main fit."""
    optimal = compute_optimal_flops(estimates, nnv)
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
    return None if fit is None else answer_of(estimates, approach, fit, nnv, d_model, flops_budget)


@dataclass
class ModelPrediction:
    """Every approach's answer for one model: what `vocabscale predict --json` prints."""

    nnv: float
    d_model: float
    flops: float | None
    compute_optimal_flops: float | None
    approaches: dict[str, Prediction]

    def to_json(self) -> dict[str, Any]:
        approaches = {}
        for name, prediction in self.approaches.items():
            answer, interval = prediction.answer, prediction.interval
            value = {
                "vocab_size": answer.vocab_size,
                "vocab_params": answer.vocab_params,
                "flops": answer.flops,
                "at_search_bound": answer.at_search_bound,
            }
            if interval is not None and interval.available:
                value["vocab_size_interval"] = [float(interval.low), float(interval.high)]
                value["confidence"] = prediction.confidence
                value["refits_excluded_share"] = interval.excluded_share
            approaches[name] = value
        return {
            "nnv": self.nnv,
            "d_model": self.d_model,
            "flops": self.flops,
            "compute_optimal_flops": self.compute_optimal_flops,
            "approaches": approaches,
        }


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
    """The answer of every approach for one model; d defaults to the paper's width for Nnv,
    the budget to approach 1's optimum; with `intervals`, each with its bootstrap interval."""
    check_positive(nnv=nnv, d_model=d_model, flops=flops_budget)
    estimates = as_estimates(coefficients)
    d_model = width_for_nnv(nnv) if d_model is None else d_model
    optimal = compute_optimal_flops(estimates, nnv)
    budget = flops_budget if flops_budget is not None else optimal
    confidence = confidence_of(estimates)
    predictions = {}
    for name, result in estimates.approaches.items():
        answer = answer_of(estimates, name, result.fit, nnv, d_model, budget)
        interval = None
        if intervals:
            interval = bootstrap_interval(estimates, name, nnv, d_model, budget, confidence)
        predictions[name] = Prediction(name, result.method or "", answer, interval, confidence)
    return ModelPrediction(nnv, d_model, budget, optimal, predictions)


def vocab_of(estimates: Estimates, approach: str, nnv: float, d_model: float, budget):
    """V of a fit for one model, as an interval's value: None when it fails, is not finite
    or lies at the edge of the V searched."""

    def value(fit: Fit) -> float | None:
        try:
            answer = answer_of(estimates, approach, fit, nnv, d_model, budget)
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
    """The interval of V for one model over the approach's bootstrap refits (the budget held
    at the caller's); None without refits."""
    estimates = as_estimates(coefficients)
    result = estimates.fitted(approach)
    if result is None:
        return None
    value = vocab_of(estimates, approach, nnv, d_model, flops_budget)
    interval = refit_interval(result, value, confidence)
    if interval is None or not interval.available:
        return interval
    return replace(interval, low=float(interval.low), high=float(interval.high))


def predictions_table(coefficients: Coefficients, targets: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per target and approach: V, Nv, budget and bootstrap interval of V, with the
    share of refits the interval left out."""
    rows = []
    for target in targets:
        d_model = target.get("d_model") or width_for_nnv(target["nnv"])
        answer = predict(coefficients, target["nnv"], d_model, target.get("flops"), intervals=True)
        for approach, prediction in answer.approaches.items():
            value, interval = prediction.answer, prediction.interval
            rows.append(
                {
                    "target": target.get("name", f"{target['nnv']:.3g}"),
                    "nnv": target["nnv"],
                    "d_model": d_model,
                    "approach": approach,
                    "method": prediction.method,
                    "flops": value.flops,
                    "vocab_size": value.vocab_size,
                    "vocab_params": value.vocab_params,
                    "vocab_size_low": interval.low if interval else np.nan,
                    "vocab_size_high": interval.high if interval else np.nan,
                    "refits": interval.refits if interval else 0,
                    "refits_excluded_share": interval.excluded_share if interval else np.nan,
                    "at_search_bound": value.at_search_bound,
                }
            )
    return pd.DataFrame(rows)


def predictions_with_methods(
    coefficients: Coefficients, targets: list[dict[str, Any]]
) -> pd.DataFrame:
    """predictions_table of the coefficients, and of the other method's when it was fitted."""
    estimates = as_estimates(coefficients)
    tables = [predictions_table(estimates, targets)]
    other = estimates.other_method()
    if other is not None:
        tables.append(predictions_table(other, targets))
    return pd.concat(tables, ignore_index=True)
