"""Approach 2 (derivative): the V that minimises the compute to process a fixed text,
dC/dV = 0 for C(V) = 6 (Nnv + V d) H f(V), solved over a grid of Nnv (d learnt from the trained
models, or the paper's width mapping), a power law Nv ∝ Nnv^gamma through the solutions, and
the curve anchored at the empirically best Nv of the smallest model at one compute budget
(docs/design.md, "Approach 2")."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import brentq

from vocabscale.accounting import width_for_nnv
from vocabscale.estimate.fitting import huber_least_squares, r_squared
from vocabscale.runs.table import RunsTable, RunsTableError, width_from_runs
from vocabscale.tokens_per_char import TOKENS_PER_CHAR_MAX_VOCAB, TokensPerChar

log = logging.getLogger(__name__)

#: The fitted coefficients (all a prediction needs).
COEFFICIENTS = ("gamma", "anchor")
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


WidthRule = Callable[[float], float]


def grid_width_rule(grid_widths: str, runs: RunsTable | None) -> WidthRule:
    """d for a model of the Nnv grid: the paper's mapping, or learnt from the trained models
    (`runs`), which is the right choice when they are far from the paper's sizes (the paper's
    mapping gives d = 512 to every model below 50M)."""
    if grid_widths == "paper":
        return width_for_nnv
    if grid_widths == "runs":
        if runs is None:
            raise ValueError("grid_widths=runs needs a runs table; use grid_widths=paper")
        return width_from_runs(runs.frame, runs.source)
    raise ValueError(f"grid_widths must be 'runs' or 'paper', not {grid_widths!r}")


def fit_exponent(
    nnv_grid,
    width: WidthRule,
    f: TokensPerChar,
    huber_delta: float,
    through: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """gamma of Nv = k Nnv^gamma through the derivative solutions over `nnv_grid`, by Huber
    regression on logs (the paper's fitting convention).

    With `through` = (Nnv, d) of the anchor model, the line is fitted through that model's own
    solution (no free intercept): the curve is used as Nv_anchor (Nnv / Nnv_anchor)^gamma, so
    gamma should describe how the optimum grows from the anchor model. This reproduces the
    published 0.8354; the free-intercept Huber and least-squares slopes are reported beside it.
    """
    nnv = np.asarray(sorted(nnv_grid), dtype=float)
    if len(np.unique(nnv)) < 2:
        raise ValueError("the derivative exponent needs at least two distinct Nnv in nnv_grid")
    widths = np.array([float(width(n)) for n in nnv])
    vocab = np.array([compute_optimal_vocab(n, d, f) for n, d in zip(nnv, widths)])
    x, y = np.log(nnv), np.log(vocab * widths)
    ols_slope, ols_intercept = np.polyfit(x, y, 1)
    free = huber_least_squares(
        lambda p: p[0] + p[1] * x - y, [[ols_intercept, ols_slope]], huber_delta, ["log_k", "gamma"]
    )
    result: dict[str, Any] = {
        "gamma_free_intercept": float(free.params[1]),
        "gamma_least_squares": float(ols_slope),
    }
    if through is None:
        log_k, gamma = free.params
        objective = free.objective
        result["method"] = "Huber on ln Nv = ln k + gamma ln Nnv (free intercept)"
    else:
        through_nnv, through_d = through
        through_vocab = compute_optimal_vocab(through_nnv, through_d, f)
        x0, y0 = np.log(through_nnv), np.log(through_vocab * through_d)
        dx, dy = x - x0, y - y0
        start = float(dx @ dy / (dx @ dx)) if dx @ dx > 0 else ols_slope
        fit = huber_least_squares(lambda p: p[0] * dx - dy, [[start]], huber_delta, ["gamma"])
        gamma, objective = float(fit.params[0]), fit.objective
        log_k = y0 - gamma * x0
        result["method"] = "Huber on ln(Nv/Nv_anchor) = gamma ln(Nnv/Nnv_anchor) (through anchor)"
        result["through"] = {
            "nnv": float(through_nnv),
            "d_model": float(through_d),
            "vocab_size": float(through_vocab),
            "vocab_params": float(through_vocab * through_d),
        }
    result.update(
        gamma=float(gamma),
        fit={"objective": float(objective), "r_squared": r_squared(y, log_k + gamma * x)},
        solutions=[
            {
                "nnv": float(n),
                "d_model": float(d),
                "vocab_size": float(v),
                "vocab_params": float(v * d),
            }
            for n, d, v in zip(nnv, widths, vocab)
        ],
    )
    return result


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


def common_budget_range(model: pd.DataFrame) -> tuple[float, float]:
    """The compute range every run of `model` covers: (largest first checkpoint, smallest
    last checkpoint); empty when the first exceeds the second."""
    reach = model.groupby("run")["flops"].agg(["min", "max"])
    return float(reach["min"].max()), float(reach["max"].min())


def vocab_losses_at_budget(model: pd.DataFrame, budget: float) -> pd.DataFrame:
    """Per vocabulary size of one model's runs: L_u at `budget` (runs of one V averaged) and d,
    sorted by V."""
    losses = [
        {
            "vocab_size": float(points["vocab_size"].iloc[0]),
            "d_model": float(points["d_model"].iloc[0]),
            "loss_u": loss_at_budget(points, budget),
        }
        for _, points in model.groupby("run")
    ]
    return (
        pd.DataFrame(losses)
        .groupby("vocab_size", as_index=False)
        .agg(loss_u=("loss_u", "mean"), d_model=("d_model", "first"))
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
    low, high = common_budget_range(model)
    if budget is None:
        budget = high
    if not low <= budget <= high:
        raise RunsTableError(
            f"{runs.source}: derivative anchor budget {budget:.4g} FLOPs is outside "
            f"[{low:.4g}, {high:.4g}], the range every run of the smallest model covers"
        )
    table = vocab_losses_at_budget(model, budget)
    best = table.loc[table["loss_u"].idxmin()]
    at_edge = best["vocab_size"] in (table["vocab_size"].min(), table["vocab_size"].max())
    if at_edge:
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
        "at_sweep_edge": bool(at_edge),
        "losses": table.to_dict(orient="records"),
    }


def explicit_anchor(
    nnv: float | None, vocab_size: float | None, d_model: int | None
) -> dict[str, float] | None:
    """The anchor that `anchor_nnv`, `anchor_vocab_size` and `anchor_d_model` give (all three,
    or none: then the anchor comes from the runs)."""
    given = {"nnv": nnv, "vocab_size": vocab_size, "d_model": d_model}
    if all(value is None for value in given.values()):
        return None
    missing = [f"anchor_{key}" for key, value in given.items() if value is None]
    if missing:
        raise ValueError(f"estimate.derivative: an explicit anchor needs {', '.join(missing)} too")
    return given


def estimate_derivative(
    runs: RunsTable | None,
    f: TokensPerChar,
    *,
    nnv_grid,
    anchor_flops: float | None,
    anchor_nnv: float | None,
    anchor_vocab_size: float | None,
    anchor_d_model: int | None,
    huber_delta: float,
    grid_widths: str,
    exponent_through_anchor: bool,
) -> dict[str, Any]:
    """Approach 2 with the options of `estimate.derivative`. gamma from f(V) over `nnv_grid`
    (None: the trained models' Nnv, as the paper solved at its seven models); the anchor given
    explicitly (anchor_nnv, anchor_vocab_size, anchor_d_model), else the smallest model's best
    Nv in the runs."""
    anchor = explicit_anchor(anchor_nnv, anchor_vocab_size, anchor_d_model)
    if anchor is not None:
        point = {
            **{key: float(anchor[key]) for key in ("nnv", "vocab_size", "d_model")},
            "vocab_params": float(anchor["vocab_size"] * anchor["d_model"]),
            "flops": None,
            "source": "given",
        }
    else:
        if runs is None:
            raise ValueError("the derivative approach needs runs or an explicit anchor")
        point = {**empirical_anchor(runs, anchor_flops), "source": "runs"}
    grid_source = "given"
    if nnv_grid is None:
        if runs is None:
            raise ValueError("without runs the derivative approach needs an explicit nnv_grid")
        nnv_grid, grid_source = sorted(runs.frame["non_vocab_params"].unique()), "trained models"
    through = (point["nnv"], point["d_model"]) if exponent_through_anchor else None
    exponent = fit_exponent(nnv_grid, grid_width_rule(grid_widths, runs), f, huber_delta, through)
    log.info(
        "derivative: gamma = %.4f (free intercept %.4f, least squares %.4f), anchor Nv = %.4g "
        "at Nnv = %.4g",
        exponent["gamma"],
        exponent["gamma_free_intercept"],
        exponent["gamma_least_squares"],
        point["vocab_params"],
        point["nnv"],
    )
    return {
        "gamma": exponent["gamma"],
        "anchor": point,
        "exponent_fit": exponent,
        "options": {
            "anchor_flops": anchor_flops,
            "anchor": anchor,
            "huber_delta": huber_delta,
            "nnv_grid": [float(n) for n in nnv_grid],
            "nnv_grid_source": grid_source,
            "grid_widths": grid_widths,
            "exponent_through_anchor": exponent_through_anchor,
        },
    }


def predict_vocab_params(coefficients: dict[str, Any], nnv: float) -> float:
    anchor = coefficients["anchor"]
    return float(anchor["vocab_params"] * (nnv / anchor["nnv"]) ** coefficients["gamma"])


def predict(
    fitted: dict[str, Any], nnv: float, d_model: float, budget: float | None, optimal: float | None
) -> dict[str, float | None]:
    """V and Nv on the anchored curve; the budget shown is approach 1's optimum for Nnv."""
    nv = predict_vocab_params(fitted, nnv)
    return {"vocab_size": nv / d_model, "vocab_params": nv, "flops": optimal}
