"""Predictions from a set of coefficients: the V (and Nv) each approach recommends for a model
with Nnv non-vocabulary parameters, width d and compute budget C.

Approaches 1 and 2 answer for the compute-optimal budget of that Nnv (C = (Nnv / e^K1)^2 under
approach 1's fit); approach 3 answers for any budget, the compute-optimal one by default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vocabscale.accounting import PAPER_TOKENS_PER_CHAR, width_for_nnv
from vocabscale.estimators import derivative, isoflops, parametric
from vocabscale.io import read_json

APPROACHES = ("isoflops", "derivative", "parametric")

#: The published coefficients of Tao et al. 2024 (DESIGN.md section 4).
PAPER_COEFFICIENTS: dict[str, Any] = {
    "source": "published (Tao et al. 2024)",
    "isoflops": {
        "K1": -2.4846510161625193,
        "K2": -1.589031299255507,
        "K3": None,
        "gamma": 0.4163622634135234,
        "nnv_exponent": 0.5,
        "characters_exponent": 0.5,
    },
    "derivative": {
        "gamma": 0.8353974035228025,
        "anchor": {
            "nnv": 33e6,
            "vocab_size": 6144,
            "d_model": 512,
            "vocab_params": 3_145_728,
            "flops": 2.7e17,
        },
    },
    "parametric": {
        "A1": 1.8313851559554126,
        "A2": 0.19584238398665638,
        "B": 2.1241123120064955,
        "E": 5.5327846803337435,
        "alpha1": 0.44660634152009615,
        "alpha2": 0.6707374679896795,
        "beta": 0.44660634152009615,
    },
    "tokenization": PAPER_TOKENS_PER_CHAR.as_dict(),
}


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
) -> dict[str, float] | None:
    """Nv and V of one approach (None when the coefficient set lacks it)."""
    fitted = coefficients.get(approach)
    if not fitted or "error" in fitted:
        return None
    if approach == "isoflops":
        budget = isoflops.optimal_flops(fitted, nnv)
        nv = isoflops.predict_vocab_params(fitted, budget)
    elif approach == "derivative":
        budget = compute_optimal_flops(coefficients, nnv)
        nv = derivative.predict_vocab_params(fitted, nnv)
    else:
        budget = flops_budget
        if budget is None:
            raise ValueError(
                "the parametric approach needs a budget (give --flops, or "
                "coefficients that include approach 1)"
            )
        vocab_size, at_bound = parametric.optimal_vocab(fitted, nnv, d_model, budget)
        return {
            "vocab_size": vocab_size,
            "vocab_params": vocab_size * d_model,
            "flops": budget,
            "at_search_bound": at_bound,
        }
    return {"vocab_size": nv / d_model, "vocab_params": nv, "flops": budget}


def predict(
    coefficients: dict[str, Any],
    nnv: float,
    d_model: float | None = None,
    flops_budget: float | None = None,
) -> dict[str, Any]:
    """The answer of every approach for one model, in the shape `vocabscale predict --json`
    prints."""
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
