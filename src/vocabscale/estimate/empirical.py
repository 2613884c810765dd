"""The best V a model's own runs show at one budget, the truth a backtest holds predictions to:
each run's smooth curve read at the budget, the runs of one V averaged, and the vertex of a
quadratic in ln V through the swept V near the best one; its interval from the runs' own
noise (the bootstrap's noise model)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from vocabscale.estimate.bootstrap import bootstrap_bounds
from vocabscale.estimate.noise import NoiseModel

#: At least this share of the noise draws must give a vertex for the truth to have an interval.
MIN_VERTEX_SHARE = 0.5


def common_budget_range(model: pd.DataFrame) -> tuple[float, float]:
    """The compute range every run of one model covers: (largest first checkpoint, smallest
    last checkpoint); empty when the first exceeds the second."""
    reach = model.groupby("run")["flops"].agg(["min", "max"])
    return float(reach["min"].max()), float(reach["max"].min())


def smoothing_weights(x: np.ndarray, x0: float) -> np.ndarray:
    """The weights on a run's values that give its smooth curve's value at x0: a least-squares
    polynomial in x of degree min(3, points // 2) (as the bootstrap smooths a run), so a
    reading is linear in L_u and carries neither checkpoint noise nor the bias of linear
    interpolation between far-apart checkpoints."""
    degree = min(3, len(x) // 2)
    centre, scale = x.mean(), x.std() or 1.0
    design = np.vander((x - centre) / scale, degree + 1)
    return np.vander([(x0 - centre) / scale], degree + 1)[0] @ np.linalg.pinv(design)


class ReadingAtBudget:
    """L_u of each swept V of one model at one budget, as a fixed linear map of the table's
    rows: each run's smooth curve in D^-1/2 (the shape of a loss law in tokens) read at the
    tokens the budget buys it, the runs of one V averaged. Refits and noise draws only
    multiply."""

    def __init__(self, frame: pd.DataFrame, model: pd.DataFrame, budget: float):
        self.budget = budget
        self.vocab_sizes = np.sort(model["vocab_size"].unique().astype(float))
        self.weights = np.zeros((len(self.vocab_sizes), len(frame)))
        positions = pd.Series(np.arange(len(frame)), index=frame.index)
        for row, vocab_size in enumerate(self.vocab_sizes):
            runs = model[model["vocab_size"] == vocab_size].groupby("run")
            for _, run in runs:
                tokens = run["tokens"].to_numpy(float)
                per_token = float(np.median(run["flops"].to_numpy(float) / tokens))
                weights = smoothing_weights(tokens**-0.5, (budget / per_token) ** -0.5)
                self.weights[row, positions[run.index].to_numpy()] += weights / runs.ngroups

    def losses(self, loss_u: np.ndarray) -> np.ndarray:
        """Each swept V's L_u at the budget, in the order of `vocab_sizes`."""
        return self.weights @ loss_u


def local_quadratic(vocab_sizes: np.ndarray, losses: np.ndarray) -> tuple[float, float] | None:
    """(vertex V, curvature) of a quadratic in ln V through the swept V within a factor e of
    the best one (at least its three nearest): local, since L_u over a wide sweep is not
    symmetric in ln V. None with fewer than three V; the curvature is d2 L_u / d(ln V)^2,
    and the vertex is None-like (NaN) when the quadratic has no minimum."""
    x = np.log(np.asarray(vocab_sizes, dtype=float))
    if len(x) < 3:
        return None
    best = x[int(np.argmin(losses))]
    window = np.abs(x - best) <= 1.0
    if window.sum() < 3:
        window = np.isin(np.arange(len(x)), np.argsort(np.abs(x - best))[:3])
    a, b, _ = np.polyfit(x[window], np.asarray(losses, dtype=float)[window], 2)
    if a <= 0:
        return math.nan, float(2 * a)
    return float(np.exp(np.clip(-b / (2 * a), -700, 700))), float(2 * a)


@dataclass(frozen=True)
class EmpiricalOptimum:
    """The best V of one model at one budget, as its runs show it."""

    flops: float
    vocab_size: float | None  # the vertex; None when L_u over ln V has no minimum there
    low: float  # its interval from the runs' noise (NaN: none)
    high: float
    curvature: float  # d2 L_u / d(ln V)^2 at the vertex
    best_swept: float
    swept: tuple[float, float]

    @property
    def outside_sweep(self) -> bool:
        v = self.vocab_size
        return v is not None and not self.swept[0] <= v <= self.swept[1]

    @property
    def problem(self) -> str | None:
        """Why this is not a truth to compare with, if it is not."""
        if self.vocab_size is None:
            return "its runs' L_u over ln V has no minimum at this budget (not convex)"
        if self.outside_sweep:
            return (
                f"its runs' vertex, V = {self.vocab_size:,.0f}, lies outside the swept V "
                f"({self.swept[0]:,.0f} to {self.swept[1]:,.0f})"
            )
        return None


def empirical_optimum(
    reading: ReadingAtBudget,
    loss_u: np.ndarray,
    noise: NoiseModel | None,
    draws: int,
    confidence: float,
    seed: int = 0,
) -> EmpiricalOptimum | None:
    """The vertex at the reading's budget, with an interval over `draws` noise draws (the
    draw's vertex about the smoothed runs' vertex, as the estimators' intervals are made).
    None with fewer than three swept V."""
    losses = reading.losses(loss_u)
    found = local_quadratic(reading.vocab_sizes, losses)
    if found is None:
        return None
    estimate, curvature = found
    swept = (float(reading.vocab_sizes.min()), float(reading.vocab_sizes.max()))
    best = float(reading.vocab_sizes[int(np.argmin(losses))])
    low = high = math.nan
    if noise is not None and draws and np.isfinite(estimate):
        rng = np.random.default_rng(seed)

        def vertex_of(values: np.ndarray) -> float:
            return local_quadratic(reading.vocab_sizes, reading.losses(values))[0]

        values = np.array([vertex_of(noise.draw(rng)) for _ in range(draws)])
        values = values[np.isfinite(values)]
        reference = vertex_of(noise.smooth)
        if len(values) >= max(2, MIN_VERTEX_SHARE * draws) and np.isfinite(reference):
            low, high = map(float, bootstrap_bounds(estimate, values, reference, confidence))
    value = float(estimate) if np.isfinite(estimate) else None
    return EmpiricalOptimum(reading.budget, value, low, high, curvature, best, swept)
