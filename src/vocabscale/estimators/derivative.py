"""Approach 2 (derivative): the V that minimises the compute to process a fixed text,
dC/dV = 0 for C(V) = 6 (Nnv + V d) H f(V), solved over a grid of Nnv (d from the paper's width
mapping), a power law Nv = k Nnv^gamma through the solutions, and the curve anchored at the
empirically best Nv of the smallest model at one compute budget (DESIGN.md section 4)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import brentq

from vocabscale.accounting import TOKENS_PER_CHAR_MAX_VOCAB, TokensPerChar, width_for_nnv
from vocabscale.estimators.fitting import huber_least_squares, r_squared
from vocabscale.estimators.runs import RunsTable, RunsTableError

log = logging.getLogger(__name__)

#: Search interval for the stationary point of C(V).
SEARCH_VOCAB = (16.0, float(TOKENS_PER_CHAR_MAX_VOCAB))


def compute_optimal_vocab(nnv: float, d_model: float, f: TokensPerChar) -> float:
    """Solve d/dV [(Nnv + V d) f(V)] = d f(V) + (Nnv + V d) f'(V) = 0 for V.

    Returns the upper end of the search interval when C(V) still falls there (f keeps dropping
    faster than the head grows), and the lower end when it rises everywhere.
    """

    def slope(log_v: float) -> float:
        v = np.exp(log_v)
        return float(d_model * f(v) + (nnv + v * d_model) * f.derivative(v))

    low, high = np.log(SEARCH_VOCAB[0]), np.log(SEARCH_VOCAB[1] - 1)
    at_low, at_high = slope(low), slope(high)
    if at_low >= 0:
        return float(np.exp(low))
    if at_high <= 0:
        return float(np.exp(high))
    return float(np.exp(brentq(slope, low, high, xtol=1e-12)))


def fit_exponent(nnv_grid, f: TokensPerChar, huber_delta: float) -> dict[str, Any]:
    """gamma of Nv = k Nnv^gamma through the derivative solutions, by Huber regression on logs
    (the fitting convention the paper uses throughout); the least-squares slope is reported too."""
    nnv = np.asarray(sorted(nnv_grid), dtype=float)
    widths = np.array([width_for_nnv(n) for n in nnv], dtype=float)
    vocab = np.array([compute_optimal_vocab(n, d, f) for n, d in zip(nnv, widths)])
    x, y = np.log(nnv), np.log(vocab * widths)
    ols_slope, ols_intercept = np.polyfit(x, y, 1)
    fit = huber_least_squares(
        lambda p: p[0] + p[1] * x - y, [[ols_intercept, ols_slope]], huber_delta, ["log_k", "gamma"]
    )
    log_k, gamma = fit.params
    return {
        "gamma": float(gamma),
        "gamma_least_squares": float(ols_slope),
        "fit": {"objective": fit.objective, "r_squared": r_squared(y, log_k + gamma * x)},
        "solutions": [
            {
                "nnv": float(n),
                "d_model": float(d),
                "vocab_size": float(v),
                "vocab_params": float(v * d),
            }
            for n, d, v in zip(nnv, widths, vocab)
        ],
    }


def loss_at_budget(run: pd.DataFrame, budget: float) -> float:
    """L_u of one run at compute `budget`, interpolated linearly in log C between checkpoints."""
    ordered = run.sort_values("flops")
    return float(
        np.interp(
            np.log(budget),
            np.log(ordered["flops"].to_numpy(float)),
            ordered["loss_u"].to_numpy(float),
        )
    )


def empirical_anchor(runs: RunsTable, budget: float | None = None) -> dict[str, Any]:
    """The best Nv of the smallest model at `budget` (default: the largest budget every
    vocabulary's run of that model reaches, so nothing is extrapolated)."""
    frame = runs.frame
    smallest = frame["non_vocab_params"].min()
    model = frame[frame["non_vocab_params"] == smallest]
    if model["vocab_size"].nunique() < 2:
        raise RunsTableError(
            f"{runs.source}: the smallest model (Nnv={smallest:.4g}) was trained with "
            f"{model['vocab_size'].nunique()} vocabulary size(s); the anchor needs at least 2"
        )
    reach = model.groupby("run")["flops"].agg(["min", "max"])
    if budget is None:
        budget = float(reach["max"].min())
    low, high = float(reach["min"].max()), float(reach["max"].min())
    if not low <= budget <= high:
        raise RunsTableError(
            f"derivative anchor budget {budget:.4g} FLOPs is outside [{low:.4g}, {high:.4g}], the "
            "range every run of the smallest model covers"
        )
    losses = []
    for run, points in model.groupby("run"):
        losses.append(
            {
                "run": run,
                "vocab_size": float(points["vocab_size"].iloc[0]),
                "d_model": float(points["d_model"].iloc[0]),
                "loss_u": loss_at_budget(points, budget),
            }
        )
    table = (
        pd.DataFrame(losses)
        .groupby("vocab_size", as_index=False)
        .agg(loss_u=("loss_u", "mean"), d_model=("d_model", "first"))
    )
    best = table.loc[table["loss_u"].idxmin()]
    if best["vocab_size"] in (table["vocab_size"].min(), table["vocab_size"].max()):
        log.warning(
            "derivative anchor: the best V (%d) is at the edge of the sweep; the true "
            "optimum may lie outside it",
            best["vocab_size"],
        )
    return {
        "nnv": float(smallest),
        "vocab_size": float(best["vocab_size"]),
        "d_model": float(best["d_model"]),
        "vocab_params": float(best["vocab_size"] * best["d_model"]),
        "flops": budget,
        "losses": table.to_dict(orient="records"),
    }


def estimate_derivative(
    runs: RunsTable | None,
    f: TokensPerChar,
    nnv_grid,
    anchor_flops: float | None = None,
    anchor: dict[str, float] | None = None,
    huber_delta: float = 1e-3,
) -> dict[str, Any]:
    """gamma from f(V); the anchor from `anchor` (nnv, vocab_size, d_model) when given, else
    from the runs."""
    exponent = fit_exponent(nnv_grid, f, huber_delta)
    if anchor is not None:
        point = {
            **anchor,
            "vocab_params": anchor["vocab_size"] * anchor["d_model"],
            "flops": None,
            "source": "given",
        }
    else:
        if runs is None:
            raise ValueError("the derivative approach needs runs or an explicit anchor")
        point = {**empirical_anchor(runs, anchor_flops), "source": "runs"}
    log.info(
        "derivative: gamma = %.4f, anchor Nv = %.4g at Nnv = %.4g",
        exponent["gamma"],
        point["vocab_params"],
        point["nnv"],
    )
    return {
        "gamma": exponent["gamma"],
        "anchor": point,
        "exponent_fit": exponent,
        "options": {
            "anchor_flops": anchor_flops,
            "huber_delta": huber_delta,
            "nnv_grid": [float(n) for n in nnv_grid],
        },
    }


def predict_vocab_params(coefficients: dict[str, Any], nnv: float) -> float:
    anchor = coefficients["anchor"]
    return float(anchor["vocab_params"] * (nnv / anchor["nnv"]) ** coefficients["gamma"])
