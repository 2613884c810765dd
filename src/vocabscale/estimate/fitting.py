"""Robust least squares shared by the estimators: scipy's trust-region solver with a Huber loss,
from several starting points, reporting the objective and parameters that end on a bound."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

log = logging.getLogger(__name__)


@dataclass
class HuberFit:
    params: np.ndarray
    objective: float  # sum of Huber losses (delta-scaled, as the paper defines it)
    residuals: np.ndarray
    on_bound: list[str]
    starts: int
    success: bool


def huber_objective(residuals: np.ndarray, delta: float) -> float:
    """sum_i huber_delta(r_i), with huber_delta(r) = r^2/2 inside |r| <= delta, else
    delta (|r| - delta/2)."""
    absolute = np.abs(residuals)
    return float(
        np.sum(np.where(absolute <= delta, 0.5 * residuals**2, delta * (absolute - 0.5 * delta)))
    )


def huber_least_squares(
    residual: Callable[[np.ndarray], np.ndarray],
    starts: Sequence[Sequence[float]],
    delta: float,
    names: Sequence[str],
    bounds: tuple[Sequence[float], Sequence[float]] | None = None,
    jacobian: Callable[[np.ndarray], np.ndarray] | str = "2-point",
) -> HuberFit:
    """Minimise sum huber_delta(residual(p)) from every start; keep the best."""
    lower, upper = (
        (np.full(len(names), -np.inf), np.full(len(names), np.inf))
        if bounds is None
        else (np.asarray(bounds[0], float), np.asarray(bounds[1], float))
    )
    best = None
    for start in starts:
        x0 = np.clip(np.asarray(start, float), lower, upper)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            try:
                result = least_squares(
                    residual,
                    x0,
                    jac=jacobian,
                    bounds=(lower, upper),
                    loss="huber",
                    f_scale=delta,
                    xtol=1e-10,
                    ftol=1e-10,
                    gtol=1e-10,
                    max_nfev=500,
                )
            except (ValueError, np.linalg.LinAlgError):
                continue
        if not np.all(np.isfinite(result.fun)):
            continue
        objective = huber_objective(result.fun, delta)
        if best is None or objective < best[0]:
            best = (objective, result)
    if best is None:
        raise RuntimeError("the fit failed from every starting point")
    objective, result = best
    span = np.where(np.isfinite(upper - lower), upper - lower, np.abs(result.x) + 1.0)
    on_bound = [
        name
        for name, value, lo, hi, width in zip(names, result.x, lower, upper, span)
        if (np.isfinite(lo) and value - lo <= 1e-6 * width)
        or (np.isfinite(hi) and hi - value <= 1e-6 * width)
    ]
    for name in on_bound:
        log.warning(
            "fitted parameter %s ended on its bound (%g)", name, result.x[list(names).index(name)]
        )
    if not result.success:
        log.warning("the best fit stopped before converging: %s", result.message)
    return HuberFit(result.x, objective, result.fun, on_bound, len(starts), bool(result.success))


def r_squared(observed: np.ndarray, predicted: np.ndarray) -> float:
    observed, predicted = np.asarray(observed, float), np.asarray(predicted, float)
    total = np.sum((observed - observed.mean()) ** 2)
    return float(1 - np.sum((observed - predicted) ** 2) / total) if total > 0 else float("nan")
