"""Predictions from a set of coefficients: the V (and Nv) each approach recommends for a model
with Nnv non-vocabulary parameters, width d and compute budget C, with bootstrap intervals.

Approaches 1 and 2 answer for the compute-optimal budget of that Nnv (C = (Nnv / e^K1)^2 under
approach 1's fit); approach 3 answers for any budget, the compute-optimal one by default.
`vocabscale predict` prints them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vocabscale.accounting import width_for_nnv
from vocabscale.config import defaults
from vocabscale.estimate import isoflops
from vocabscale.estimate.approaches import APPROACHES
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
    d_model = d_model or width_for_nnv(nnv)
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


def bootstrap_interval(
    coefficients: dict[str, Any],
    approach: str,
    nnv: float,
    d_model: float,
    flops_budget: float | None,
    confidence: float,
) -> tuple[float, float] | None:
    """Percentile interval of V over the bootstrap replicates stored with the coefficients
    (each replicate refits one approach on runs resampled with replacement; the budget is
    held at the caller's)."""
    replicates = (coefficients.get(approach) or {}).get("bootstrap") or []
    values = []
    for replicate in replicates:
        try:
            answer = predict_one(
                {**coefficients, approach: replicate}, approach, nnv, d_model, flops_budget
            )
        except (ValueError, KeyError, FloatingPointError):
            continue
        if answer and np.isfinite(answer["vocab_size"]):
            values.append(answer["vocab_size"])
    if len(values) < 2:
        return None
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def predictions_table(coefficients: dict[str, Any], targets: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per target and approach: V, Nv, budget and bootstrap interval of V."""
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
                    "flops": value["flops"],
                    "vocab_size": value["vocab_size"],
                    "vocab_params": value["vocab_params"],
                    "vocab_size_low": interval[0] if interval else np.nan,
                    "vocab_size_high": interval[1] if interval else np.nan,
                    "at_search_bound": bool(value.get("at_search_bound", False)),
                }
            )
    return pd.DataFrame(rows)


# --- vocabscale predict ----------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nnv", type=float, required=True, help="non-vocabulary parameters")
    parser.add_argument("--d-model", type=int, help="width (default: the paper's mapping)")
    parser.add_argument("--flops", type=float, help="budget (default: compute-optimal)")
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
        if interval:
            value.update(vocab_size_interval=list(interval), confidence=confidence)
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
        if value.get("at_search_bound"):
            line += "   (at the edge of the V searched: the fit gives only a bound)"
        print(line)
