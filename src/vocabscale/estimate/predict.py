"""Predictions from a set of coefficients: the V (and Nv) each approach recommends for a model
with Nnv non-vocabulary parameters, width d and compute budget C, with bootstrap intervals.

Approaches 1 and 2 answer for the compute-optimal budget of that Nnv (C = (Nnv / e^K1)^2 under
approach 1's fit); approach 3 answers for any budget, the compute-optimal one by default.
`vocabscale predict` prints them.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from vocabscale.accounting import width_for_nnv
from vocabscale.config import defaults
from vocabscale.estimate import isoflops
from vocabscale.estimate.approaches import APPROACHES
from vocabscale.estimate.bootstrap import bootstrap_bounds
from vocabscale.estimate.published import PAPER_COEFFICIENTS
from vocabscale.io import read_json


def load_coefficients(spec: str | Path) -> dict[str, Any]:
    """`paper`, a coefficients.json, or an estimates directory holding one JSON per approach."""
    if str(spec) == "paper":
        return PAPER_COEFFICIENTS
    path = Path(spec)
    if path.is_dir():
        if (path / "coefficients.json").exists():
            return read_json(path / "coefficients.json")
        coefficients = {
            name: read_json(path / f"{name}.json")
            for name in APPROACHES
            if (path / f"{name}.json").exists()
        }
        if not coefficients:
            raise FileNotFoundError(f"{path}: no coefficients.json and no per-approach estimates")
        failed = {name: fit["error"] for name, fit in coefficients.items() if "error" in fit}
        coefficients = {name: fit for name, fit in coefficients.items() if name not in failed}
        first = next(iter(coefficients.values()), {})
        if "tokenization" in first:
            coefficients["tokenization"] = first["tokenization"]
        if failed:
            coefficients["failed"] = failed
        return coefficients
    data = read_json(path)
    if not any(name in data for name in APPROACHES):
        raise ValueError(f"{path}: no {', '.join(APPROACHES)} coefficients in this file")
    return data


def confidence_of(coefficients: dict[str, Any]) -> float:
    """The level of the bootstrap intervals stored with the coefficients (the params default
    where none is stored, e.g. the published coefficients)."""
    for name in APPROACHES:
        fitted = coefficients.get(name) or {}
        if "bootstrap_confidence" in fitted:
            return float(fitted["bootstrap_confidence"])
    return float(defaults("estimate.bootstrap.confidence"))


def compute_optimal_flops(coefficients: dict[str, Any], nnv: float) -> float | None:
    """Approach 1's compute-optimal budget for Nnv, the reference budget of every approach."""
    if "isoflops" not in coefficients:
        return None
    return isoflops.optimal_flops(coefficients["isoflops"], nnv)


def predict_one(
    coefficients: dict[str, Any],
    approach: str,
    nnv: float,
    d_model: float,
    flops_budget: float | None,
) -> dict[str, Any] | None:
    """Nv and V of one approach (None when the coefficient set lacks it)."""
    fitted = coefficients.get(approach)
    if not fitted or "error" in fitted:
        return None
    optimal = compute_optimal_flops(coefficients, nnv)
    return APPROACHES[approach].predict(fitted, nnv, d_model, flops_budget, optimal)


def predict(
    coefficients: dict[str, Any],
    nnv: float,
    d_model: float | None = None,
    flops_budget: float | None = None,
) -> dict[str, Any]:
    """The answer of every approach for one model, in the shape `vocabscale predict --json`
    prints; d defaults to the paper's width for Nnv, the budget to approach 1's optimum."""
    for name, value in (("nnv", nnv), ("d_model", d_model), ("flops", flops_budget)):
        if value is not None and not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive finite number, not {value!r}")
    d_model = width_for_nnv(nnv) if d_model is None else d_model
    optimal = compute_optimal_flops(coefficients, nnv)
    budget = flops_budget if flops_budget is not None else optimal
    approaches = {}
    for approach in APPROACHES:
        answer = predict_one(coefficients, approach, nnv, d_model, budget)
        if answer is not None:
            approaches[approach] = answer
    return {
        "nnv": nnv,
        "d_model": d_model,
        "flops": budget,
        "compute_optimal_flops": optimal,
        "approaches": approaches,
    }


class Interval(NamedTuple):
    """A bootstrap interval of V, and how many refits it left out (ended on a bound or at a
    search edge, failed, or gave no finite answer) of all that were tried."""

    low: float
    high: float
    refits: int
    excluded: int

    @property
    def excluded_share(self) -> float:
        return self.excluded / self.refits if self.refits else math.nan


def _vocab_of(coefficients, approach, fitted, nnv, d_model, budget) -> float | None:
    """V of one replicate (None when it is flagged, fails or lands on its search bound)."""
    if fitted is None or fitted.get("flags"):
        return None
    try:
        answer = predict_one({**coefficients, approach: fitted}, approach, nnv, d_model, budget)
    except (ValueError, KeyError, FloatingPointError):
        return None
    if not answer or not np.isfinite(answer["vocab_size"]) or answer.get("at_search_bound"):
        return None
    return float(answer["vocab_size"])


def bootstrap_interval(
    coefficients: dict[str, Any],
    approach: str,
    nnv: float,
    d_model: float,
    flops_budget: float | None,
    confidence: float,
) -> Interval | None:
    """The interval of V over the bootstrap replicates stored with the coefficients (the
    budget held at the caller's): the spread of the refits about the reference, placed about
    the estimate, when a reference fit is stored (`bootstrap.bootstrap_bounds`), else
    percentiles. Replicates that ended on a bound or at a search edge are left out and
    counted. None without replicates."""
    fitted = coefficients.get(approach) or {}
    replicates = fitted.get("bootstrap") or []
    if not replicates:
        return None
    refits = len(replicates) + int(fitted.get("bootstrap_failed") or 0)
    values = [
        value
        for replicate in replicates
        if (value := _vocab_of(coefficients, approach, replicate, nnv, d_model, flops_budget))
        is not None
    ]
    excluded = refits - len(values)
    estimate = _vocab_of(coefficients, approach, fitted, nnv, d_model, flops_budget)
    if len(values) < 2 or estimate is None:
        return Interval(math.nan, math.nan, refits, excluded)
    reference = None
    if fitted.get("bootstrap_reference") is not None:
        reference = _vocab_of(
            coefficients, approach, fitted["bootstrap_reference"], nnv, d_model, flops_budget
        )
    if reference is None and "bootstrap_reference" in fitted:
        reference = float(np.median(values))  # the reference fit itself is flagged
    low, high = bootstrap_bounds(estimate, np.array(values), reference, confidence)
    return Interval(float(low), float(high), refits, excluded)


def other_method_coefficients(coefficients: dict[str, Any]) -> dict[str, Any] | None:
    """The coefficients of the other method (`report.compare_authors`), in the same layout,
    or None when none were fitted."""
    other = {
        name: fitted["other_method"]
        for name in APPROACHES
        if isinstance(fitted := coefficients.get(name), dict) and fitted.get("other_method")
    }
    if not other:
        return None
    return {**{k: v for k, v in coefficients.items() if k not in APPROACHES}, **other}


def predictions_table(coefficients: dict[str, Any], targets: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per target and approach: V, Nv, budget and bootstrap interval of V, with the
    share of refits the interval left out."""
    confidence = confidence_of(coefficients)
    rows = []
    for target in targets:
        d_model = target.get("d_model") or width_for_nnv(target["nnv"])
        answer = predict(coefficients, target["nnv"], d_model, target.get("flops"))
        for approach, value in answer["approaches"].items():
            interval = bootstrap_interval(
                coefficients, approach, target["nnv"], d_model, answer["flops"], confidence
            )
            rows.append(
                {
                    "target": target.get("name", f"{target['nnv']:.3g}"),
                    "nnv": target["nnv"],
                    "d_model": d_model,
                    "approach": approach,
                    "method": coefficients[approach].get("method") or "",
                    "flops": value["flops"],
                    "vocab_size": value["vocab_size"],
                    "vocab_params": value["vocab_params"],
                    "vocab_size_low": interval.low if interval else np.nan,
                    "vocab_size_high": interval.high if interval else np.nan,
                    "refits": interval.refits if interval else 0,
                    "refits_excluded_share": interval.excluded_share if interval else np.nan,
                    "at_search_bound": bool(value.get("at_search_bound", False)),
                }
            )
    return pd.DataFrame(rows)


def predictions_with_methods(
    coefficients: dict[str, Any], targets: list[dict[str, Any]]
) -> pd.DataFrame:
    """predictions_table of the coefficients, and of the other method's when it was fitted."""
    tables = [predictions_table(coefficients, targets)]
    other = other_method_coefficients(coefficients)
    if other is not None:
        tables.append(predictions_table(other, targets))
    return pd.concat(tables, ignore_index=True)


# --- vocabscale predict ----------------------------------------------------------------------


def positive_number(text: str) -> float:
    """A command-line value that must be a finite number above 0 (argparse names the option
    when this raises)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, not {text}")
    return value


def positive_integer(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, not {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--nnv", type=positive_number, required=True, help="non-vocabulary parameters"
    )
    parser.add_argument(
        "--d-model", type=positive_integer, help="width (default: the paper's mapping)"
    )
    parser.add_argument("--flops", type=positive_number, help="budget (default: compute-optimal)")
    parser.add_argument(
        "--coefficients", required=True, help="paper, a coefficients.json or a directory"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> None:
    coefficients = load_coefficients(args.coefficients)
    answer = predict(coefficients, args.nnv, args.d_model, args.flops)
    confidence = confidence_of(coefficients)
    for approach, value in answer["approaches"].items():
        interval = bootstrap_interval(
            coefficients, approach, answer["nnv"], answer["d_model"], answer["flops"], confidence
        )
        if interval and np.isfinite(interval.low):
            value.update(
                vocab_size_interval=[interval.low, interval.high],
                confidence=confidence,
                refits_excluded_share=interval.excluded_share,
            )
    if args.json:
        print(json.dumps(answer))
        return
    print(f"Nnv = {answer['nnv']:.4g}, d = {answer['d_model']}, C = {answer['flops']:.4g} FLOPs")
    for approach, value in answer["approaches"].items():
        line = f"  {approach:<10}  V = {value['vocab_size']:>12,.0f}"
        line += f"   Nv = {value['vocab_params']:.4g}"
        if "vocab_size_interval" in value:
            low, high = value["vocab_size_interval"]
            line += f"   {value['confidence']:.0%} interval {low:,.0f} - {high:,.0f}"
            if value["refits_excluded_share"] > 0:
                line += f" ({value['refits_excluded_share']:.0%} of its refits left out)"
        if value.get("at_search_bound"):
            line += "   (at the edge of the V searched: the fit gives only a bound)"
        print(line)
