"""The authors' scripts step by step where vocabscale's method differs (docs/design.md, section
6): approach 2's gamma (`authors_exponent`) and approach 3's fit (`fit_loss_authors`); approach
1's are in isoflops.py. Each follows the published scripts of Tao et al. 2024
(approach2_derivative.py, approach3_isoloss.py): the same solver, starts, objective, selection
and arithmetic, so that L-BFGS-B, whose stopping point depends on the objective's last bits,
stops where theirs does."""

from __future__ import annotations

import itertools
import warnings
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import fsolve, minimize
from scipy.special import huber

from vocabscale.accounting import width_for_nnv
from vocabscale.estimate.fitting import HuberFit, huber_objective, r_squared
from vocabscale.tokens_per_char import TokensPerChar

#: The paper's seven models as the authors' script names their Nnv (rounded).
PAPER_NNV_GRID = (33e6, 85e6, 151e6, 302e6, 631e6, 1.13e9, 2.87e9)
#: fsolve's start for dC/dV = 0, and the starts of the gamma fit.
AUTHORS_VOCAB_START = 1000.0
AUTHORS_GAMMA_STARTS = np.linspace(0, 1, 20)
#: Approach 3's 486 starts, (a1, a2, b, e, alpha2, beta) in the script's loop order: a1, a2 and
#: b in linspace(0, 5, 3), e in linspace(0, 2, 2), alpha2 and beta in linspace(0, 1, 3).
AUTHORS_LOSS_GRID = (
    np.linspace(0, 5, 3),
    np.linspace(0, 5, 3),
    np.linspace(0, 5, 3),
    np.linspace(0, 2, 2),
    np.linspace(0, 1, 3),
    np.linspace(0, 1, 3),
)
#: Approach 3's fits kept only with LOW < alpha2 < 1 and LOW < beta < 1.
AUTHORS_EXPONENT_LOW = 0.1


def relative_mse(actual: np.ndarray, predicted: np.ndarray) -> float:
    """The authors' selection criterion: mean squared error over the squared mean of what is
    fitted (mean(actual)^2, not mean(actual^2))."""
    return float(np.mean(np.square(actual - predicted)) / np.mean(actual) ** 2)


# --- approach 2: gamma ------------------------------------------------------------------------


def compute_slope(vocab_size, nnv: float, d_model: float, f: TokensPerChar):
    """dC/dV for one character: 6 (d f(V) + (Nnv + V d) f'(V)), f' zero beyond f's clamp."""
    return 6 * (d_model * f(vocab_size) + (nnv + d_model * vocab_size) * f.derivative(vocab_size))


def authors_vocab(nnv: float, d_model: float, f: TokensPerChar) -> tuple[float, bool]:
    """dC/dV = 0 by fsolve from V = 1000, and whether fsolve failed to converge."""
    root, _, status, _ = fsolve(
        compute_slope, AUTHORS_VOCAB_START, args=(nnv, d_model, f), full_output=True
    )
    return float(root[0]), status != 1


def authors_gamma(log_nnv_ratio: np.ndarray, log_nv_ratio: np.ndarray, delta: float):
    """gamma of ln(Nv/Nv_0) = gamma ln(Nnv/Nnv_0): L-BFGS-B (scipy's defaults) on the summed
    Huber loss from every start in linspace(0, 1, 20), the result of smallest relative MSE among
    those with gamma < 1. Returns (gamma, the L-BFGS-B result)."""
    best = None
    for start in AUTHORS_GAMMA_STARTS:
        result = minimize(
            lambda p: np.sum(huber(delta, p * log_nnv_ratio - log_nv_ratio)),
            [start],
            method="L-BFGS-B",
        )
        error = relative_mse(log_nv_ratio, result.x[0] * log_nnv_ratio)
        if result.x[0] < 1 and (best is None or error < best[0]):
            best = (error, result)
    if best is None:
        raise RuntimeError("the authors' gamma fit ended at gamma >= 1 from every start")
    return float(best[1].x[0]), best[1]


def authors_exponent(nnv_grid, f: TokensPerChar, delta: float) -> dict[str, Any]:
    """Approach 2's gamma as the authors' script: dC/dV = 0 solved by fsolve from V = 1000 at
    each Nnv of the grid (the paper's seven, rounded) with the paper's widths, then the line
    ln(Nv/Nv_0) = gamma ln(Nnv/Nnv_0) through the first solution (`authors_gamma`). The same
    record as `derivative.fit_exponent`."""
    nnv = np.asarray(nnv_grid, dtype=float)
    widths = np.array([width_for_nnv(n) for n in nnv])
    solved = [authors_vocab(n, d, f) for n, d in zip(nnv, widths)]
    vocab = np.array([v for v, _ in solved])
    nv = vocab * widths
    x, y = np.log(nnv[1:] / nnv[0]), np.log(nv[1:] / nv[0])
    gamma, result = authors_gamma(x, y, delta)
    solutions = pd.DataFrame(
        {
            "nnv": nnv,
            "d_model": widths,
            "vocab_size": vocab,
            "vocab_params": nv,
            "at_search_bound": [failed for _, failed in solved],
        }
    )
    free_slope = float(np.polyfit(np.log(nnv), np.log(nv), 1)[0])
    return {
        "method": "the authors': fsolve from V = 1000 at the paper's rounded Nnv, paper widths; "
        "L-BFGS-B on ln(Nv/Nv_0) = gamma ln(Nnv/Nnv_0) from 20 starts, smallest relative MSE",
        "gamma": gamma,
        "gamma_free_intercept": free_slope,
        "gamma_least_squares": free_slope,
        "through": {k: float(v) for k, v in solutions.iloc[0].items() if k != "at_search_bound"},
        "fit": {
            "objective": float(result.fun),
            "r_squared": r_squared(y, gamma * x),
            "relative_mse": relative_mse(y, gamma * x),
            "converged": bool(result.success),
        },
        "solutions": [
            {**row, "at_search_bound": bool(row["at_search_bound"])}
            for row in solutions.to_dict(orient="records")
        ],
        "solutions_at_search_bound": int(solutions["at_search_bound"].sum()),
    }


# --- approach 3: the loss fit -----------------------------------------------------------------


def authors_inputs(points: pd.DataFrame, f: TokensPerChar, authors_tokenization: bool):
    """(Nnv, V d, D) as the authors' script scales them: Nnv / 1e6, (V / 1000)(d / 1000), and
    D = (H / 1e9) f(V / 1000) with the switch (their H_to_D of the rescaled V), else the true
    tokens / 1e9."""
    vocab = points["vocab_size"].to_numpy(float) / 1_000
    d_model = points["d_model"].to_numpy(float) / 1000
    x1 = points["non_vocab_params"].to_numpy(float) / 1_000_000
    if authors_tokenization:
        x3 = points["characters"].to_numpy(float) / 1_000_000_000 * f(vocab)
    else:
        x3 = points["tokens"].to_numpy(float) / 1_000_000_000
    return x1, vocab * d_model, x3


def authors_loss_starts() -> list[list[float]]:
    return [list(start) for start in itertools.product(*AUTHORS_LOSS_GRID)]


#: scipy's L-BFGS-B without a gradient takes forward differences with this absolute step
#: (`eps`), falling back to sqrt(machine epsilon) max(1, |x|) where x + step == x.
FORWARD_STEP = 1e-8
#: Its limit of 15000 evaluations counts the six differences of each: in batches, a seventh.
BATCH_MAXFUN = 15000 // 7


class AuthorsLoss:
    """L_u = e^(a1 - beta ln Nnv) + e^(a2 - alpha2 ln Nv) + e^(b - beta ln D) - e^e (alpha1 =
    beta) and its summed Huber loss, in the script's arithmetic."""

    def __init__(self, inputs, y: np.ndarray, delta: float):
        self.logs = [np.log(x) for x in inputs]
        self.y, self.delta = y, delta

    def predict(self, p) -> np.ndarray:
        """L_u at every point for parameters `p`, or for each row of a matrix of them."""
        p = np.asarray(p, dtype=float)
        a1, a2, b, e, alpha2, beta = (p[..., k, None] if p.ndim > 1 else p[k] for k in range(6))
        log1, log2, log3 = self.logs
        return (
            np.exp(a1 - beta * log1) + np.exp(a2 - alpha2 * log2) + np.exp(b - beta * log3)
        ) - np.exp(e)

    def objective(self, p) -> float:
        return np.sum(huber(self.delta, self.predict(p) - self.y))

    def objective_and_gradient(self, p: np.ndarray) -> tuple[float, np.ndarray]:
        """The objective and the forward differences scipy's L-BFGS-B would take without a
        gradient (the same steps, points and arithmetic), evaluated as one batch: the same
        numbers at a seventh of the cost, so the minimiser follows the script's path."""
        p = np.asarray(p, dtype=float)
        step = np.full(p.size, FORWARD_STEP)
        fallback = np.sqrt(np.finfo(float).eps) * np.where(p >= 0, 1.0, -1.0)
        step = np.where((p + step) - p == 0, fallback * np.maximum(1.0, np.abs(p)), step)
        points = np.tile(p, (p.size + 1, 1))
        points[np.arange(1, p.size + 1), np.arange(p.size)] = p + step
        values = np.sum(huber(self.delta, self.predict(points) - self.y), axis=1)
        return values[0], (values[1:] - values[0]) / ((p + step) - p)


def fit_loss_authors(inputs, y: np.ndarray, delta: float, starts=None) -> tuple[HuberFit, dict]:
    """Approach 3 as the authors' script fits it: L-BFGS-B (scipy's defaults, its forward
    differences taken in batches) on the summed Huber loss of the raw residuals from every
    start (default: their 486), keeping the result of smallest relative MSE among those with
    0.1 < alpha2 < 1 and 0.1 < beta < 1. Returns the fit in vocabscale's parameters (E, A1, A2,
    B, alpha1, alpha2) and how it was selected."""
    loss = AuthorsLoss(inputs, y, delta)
    starts = authors_loss_starts() if starts is None else starts
    best, kept = None, 0
    for start in starts:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            result = minimize(
                loss.objective_and_gradient,
                start,
                jac=True,
                method="L-BFGS-B",
                options={"maxfun": BATCH_MAXFUN},
            )
        alpha2, beta = result.x[4], result.x[5]
        if not (AUTHORS_EXPONENT_LOW < alpha2 < 1 and AUTHORS_EXPONENT_LOW < beta < 1):
            continue
        kept += 1
        error = relative_mse(y, loss.predict(result.x))
        if best is None or error < best[0]:
            best = (error, result)
    if best is None:
        raise RuntimeError(
            f"no start of the authors' fit ended with {AUTHORS_EXPONENT_LOW} < alpha2, beta < 1"
        )
    error, result = best
    a1, a2, b, e, alpha2, beta = result.x
    residuals = loss.predict(result.x) - y
    params = np.array([np.exp(e), np.exp(a1), np.exp(a2), np.exp(b), beta, alpha2])
    fit = HuberFit(
        params, huber_objective(residuals, delta), residuals, [], len(starts), bool(result.success)
    )
    selection = {"relative_mse": error, "starts_within_bounds": kept, "message": result.message}
    return fit, selection


def authors_start(coefficients: dict[str, float]) -> list[float]:
    """A fit's parameters as a start of the authors' parametrization (a1, a2, b, e, alpha2,
    beta), for a refit from the main fit's optimum."""
    logs = [np.log(coefficients[name]) for name in ("A1", "A2", "B", "E")]
    return [*logs, coefficients["alpha2"], coefficients["alpha1"]]
