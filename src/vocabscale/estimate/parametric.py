"""Approach 3 (parametric loss): L_u(Nnv, Nv, D) = -E + A1/Nnv^alpha1 + A2/Nv^alpha2 + B/D^beta
(alpha1 = beta, Nnv and Nv in millions, D in billions of tokens) fitted with a Huber loss, and
the V that minimises it at fixed Nnv, d and C (docs/design.md, "Approach 3"). The law is linear
in (E, A1, A2, B) once the exponents are fixed, so a grid of exponents scored by bounded linear
least squares starts the nonlinear fit."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from scipy.optimize import lsq_linear, minimize_scalar

from vocabscale.accounting import MIN_VOCAB_SIZE
from vocabscale.estimate.authors import authors_inputs, authors_start, fit_loss_authors
from vocabscale.estimate.fitting import (
    HuberFit,
    huber_least_squares,
    huber_objective,
    huber_standard_errors,
    r_squared,
)
from vocabscale.estimate.methods import method_named
from vocabscale.estimate.results import Answer, Fit
from vocabscale.runs.table import RunsTable, RunsTableError
from vocabscale.tokens_per_char import TokensPerChar

log = logging.getLogger(__name__)

PARAMETERS = ("E", "A1", "A2", "B", "alpha1", "alpha2")
UNITS = {"non_vocab_params": 1e6, "vocab_params": 1e6, "tokens": 1e9}
EXPONENT_GRID = np.linspace(0.05, 1.5, 15)
EXPONENT_BOUNDS = (1e-3, 3.0)
#: V searched for the optimum: from the smallest byte-level BPE to 100 million.
PREDICTION_VOCAB = (float(MIN_VOCAB_SIZE), 1e8)


def scaled_inputs(nnv, nv, tokens) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.asarray(nnv, float) / UNITS["non_vocab_params"],
        np.asarray(nv, float) / UNITS["vocab_params"],
        np.asarray(tokens, float) / UNITS["tokens"],
    )


def loss_u(p: dict[str, float], nnv, nv, tokens):
    """L_u at (Nnv, Nv, D) given in natural units (parameters, parameters, tokens)."""
    x1, x2, x3 = scaled_inputs(nnv, nv, tokens)
    beta = p.get("beta", p["alpha1"])
    return (
        -p["E"] + p["A1"] * x1 ** -p["alpha1"] + p["A2"] * x2 ** -p["alpha2"] + p["B"] * x3**-beta
    )


def _design(x1, x2, x3, alpha1, alpha2):
    return np.column_stack([-np.ones_like(x1), x1**-alpha1, x2**-alpha2, x3**-alpha1])


def _huber_rows(residuals: np.ndarray, delta: float) -> np.ndarray:
    """`huber_objective` of every row of a matrix of residuals."""
    absolute = np.abs(residuals)
    inside = absolute <= delta
    return np.where(inside, 0.5 * residuals**2, delta * (absolute - 0.5 * delta)).sum(axis=1)


class GridStarts:
    """The exponent grid prepared on a table's inputs for refits: at every (alpha1, alpha2) the
    law is linear in (E, A1, A2, B), so the design's pseudo-inverse scores any L_u with two
    matrix products (least squares, the negative A's then set to 0: a start needs no more)."""

    def __init__(self, x1, x2, x3):
        self.exponents = np.array([(a1, a2) for a1 in EXPONENT_GRID for a2 in EXPONENT_GRID])
        self.designs = np.stack([_design(x1, x2, x3, a1, a2) for a1, a2 in self.exponents])
        self.inverses = np.linalg.pinv(self.designs)

    def best(self, y: np.ndarray, delta: float, away_from: np.ndarray, keep: int):
        """The `keep` best grid points for L_u `y` more than one grid step from the exponents
        `away_from` in alpha1 or alpha2 (a start there explores another part of the valley)."""
        coefficients = np.einsum("gkn,n->gk", self.inverses, y)
        coefficients[:, 1:] = np.maximum(coefficients[:, 1:], 0.0)
        scores = _huber_rows(np.einsum("gnk,gk->gn", self.designs, coefficients) - y, delta)
        step = EXPONENT_GRID[1] - EXPONENT_GRID[0]
        far = np.any(np.abs(self.exponents - away_from) > step, axis=1)
        order = [g for g in np.argsort(scores) if far[g]][:keep]
        return [np.concatenate([coefficients[g], self.exponents[g]]) for g in order]


def _starts(x1, x2, x3, y, delta: float, keep: int) -> list[np.ndarray]:
    """Score the exponent grid with the best non-negative linear coefficients at each point."""
    scored = []
    lower = [-np.inf, 0.0, 0.0, 0.0]
    for alpha1 in EXPONENT_GRID:
        for alpha2 in EXPONENT_GRID:
            design = _design(x1, x2, x3, alpha1, alpha2)
            linear = lsq_linear(design, y, bounds=(lower, np.inf), method="bvls").x
            objective = huber_objective(design @ linear - y, delta)
            scored.append((objective, np.concatenate([linear, [alpha1, alpha2]])))
    scored.sort(key=lambda item: item[0])
    return [start for _, start in scored[:keep]]


def law_jacobian(inputs, p, logs=None) -> np.ndarray:
    """d L_u / d (E, A1, A2, B, alpha1, alpha2) at every point (alpha1 = beta); `logs`, the
    inputs' logarithms, when the caller keeps them."""
    x1, x2, x3 = inputs
    log1, log2, log3 = logs or (np.log(x1), np.log(x2), np.log(x3))
    _, a1, a2, b, alpha1, alpha2 = p
    t1, t2, t3 = x1**-alpha1, x2**-alpha2, x3**-alpha1
    return np.column_stack(
        [-np.ones_like(x1), t1, t2, t3, -a1 * log1 * t1 - b * log3 * t3, -a2 * log2 * t2]
    )


def fit_loss(x1, x2, x3, y, delta: float, keep: int = 6, starts=None) -> HuberFit:
    """Huber fit of the six parameters from `starts`, else from the `keep` best points of the
    exponent grid."""
    logs = (np.log(x1), np.log(x2), np.log(x3))

    def residual(p):
        e, a1, a2, b, alpha1, alpha2 = p
        return -e + a1 * x1**-alpha1 + a2 * x2**-alpha2 + b * x3**-alpha1 - y

    def jacobian(p):
        return law_jacobian((x1, x2, x3), p, logs)

    lower = [-np.inf, 0.0, 0.0, 0.0, EXPONENT_BOUNDS[0], EXPONENT_BOUNDS[0]]
    upper = [np.inf, np.inf, np.inf, np.inf, EXPONENT_BOUNDS[1], EXPONENT_BOUNDS[1]]
    if starts is None:
        starts = _starts(x1, x2, x3, y, delta, keep)
    return huber_least_squares(residual, starts, delta, PARAMETERS, (lower, upper), jacobian)


def fit_points(runs: RunsTable, min_flops: float):
    """The rows with C >= min_flops, checked to hold enough distinct sizes to separate the
    terms of the law (with one model size A1 and E are the same thing)."""
    points = runs.frame[runs.frame["flops"] >= min_flops]
    where = f"{runs.source}: {len(points)} rows have C >= {min_flops:.3g} FLOPs"
    if len(points) < len(PARAMETERS) + 1:
        raise RunsTableError(
            f"{where}; the parametric fit needs at least {len(PARAMETERS) + 1} "
            "(lower the min_flops filter)"
        )
    for column, what in (("non_vocab_params", "model sizes"), ("vocab_params", "Nv values")):
        if points[column].nunique() < 2:
            raise RunsTableError(
                f"{where}, all with one of the {what}; the parametric fit needs at least 2 "
                "(train more models or vocabularies, or lower the min_flops filter)"
            )
    return points


#: A parameter whose 90% interval (from the curvature of the fit) spans more than this factor
#: is weakly identified.
WEAK_IDENTIFICATION_FACTOR = 2.0
Z_90 = 1.6448536269514722


def identification(params: dict[str, float], errors: np.ndarray | None) -> dict[str, Any]:
    """90% intervals of the parameters from the curvature at the optimum, and the parameters
    whose interval spans more than WEAK_IDENTIFICATION_FACTOR (or crosses 0): the data leave
    them free along a nearly flat objective."""
    if errors is None:
        return {"intervals": None, "weak": list(PARAMETERS)}
    intervals, weak = {}, []
    for name, error in zip(PARAMETERS, errors):
        low, high = sorted((params[name] - Z_90 * error, params[name] + Z_90 * error))
        intervals[name] = [float(low), float(high)]
        if low * high <= 0 or max(abs(low), abs(high)) > WEAK_IDENTIFICATION_FACTOR * min(
            abs(low), abs(high)
        ):
            weak.append(name)
    return {"intervals": intervals, "weak": weak}


def fit_result(fit: HuberFit, y: np.ndarray) -> Fit:
    """The law's coefficients (beta = alpha1), its flags and the fit's quality."""
    p = dict(zip(PARAMETERS, map(float, fit.params)))
    predicted = y + fit.residuals
    flags = [f"{name} on its bound" for name in fit.on_bound]
    if not fit.converged:
        flags.append("did not converge")
    quality = {
        "objective": fit.objective,
        "r_squared": r_squared(y, predicted),
        "rmse": float(np.sqrt(np.mean(fit.residuals**2))),
        "points": len(y),
        "on_bound": fit.on_bound,
        "starts": fit.starts,
        "converged": fit.converged,
        "identification": identification(p, fit.standard_errors),
    }
    return Fit({**p, "beta": p["alpha1"]}, flags, {"fit": quality})


#: A corrected refit starts from the main fit's optimum and, when the main fit is weakly
#: identified, from up to this many of the best points of the exponent grid for its own L_u
#: that lie away from that optimum: along a nearly flat valley a refit's optimum can sit far
#: from the main fit's, where a start from the main fit's alone often stops unconverged and is
#: left out of the interval. One start rescued as many refits as two (benchmarks/RESULTS.md).
REFIT_GRID_STARTS = 1


def weakly_identified(fit: Fit) -> bool:
    """What the report calls weak identification: a parameter's 90% interval over 2x or across
    0, or alpha2 > 1."""
    weak = (fit.quality.get("identification") or {}).get("weak")
    return bool(weak) or fit.coefficient("alpha2", 0.0) > 1


class ParametricFitter:
    """Approach 3 prepared on a table: the points fitted and their scaled inputs are fixed;
    calling it with L_u (row for row) fits the law, from the main fit's optimum when given.
    The method's fit is the Huber minimum (corrected) or the authors' L-BFGS-B selection."""

    def __init__(
        self,
        runs: RunsTable,
        f: TokensPerChar,
        *,
        method: str,
        min_flops: float,
        huber_delta: float,
        authors_tokenization: bool,
    ):
        points = fit_points(runs, min_flops)
        self.delta = huber_delta
        chosen = method_named(method)
        self.authors = chosen.authors_tokenization or authors_tokenization
        self.authors_fit = chosen.authors_loss_fit
        if self.authors_fit:  # the script's order of the points, which its sums follow
            order = np.argsort(runs.frame["flops"].to_numpy(float), kind="quicksort")
            points = runs.frame.iloc[order]
            points = points[points["flops"] >= min_flops]
            self.inputs = authors_inputs(points, f, self.authors)
            self.true_inputs = authors_inputs(points, f, False)
        else:
            nnv, nv = points["non_vocab_params"], points["vocab_params"]
            tokens = points["tokens"].to_numpy(float)
            self.true_inputs = scaled_inputs(nnv, nv, tokens)
            self.inputs = self.true_inputs
            if self.authors:
                vocab = points["vocab_size"].to_numpy(float)
                self.inputs = scaled_inputs(nnv, nv, points["characters"] * f(vocab / 1000.0))
        self.rows = points.index.to_numpy()
        self.grid: GridStarts | None = None  # prepared at the first refit
        self.options = {
            "method": method,
            "min_flops": min_flops,
            "huber_delta": huber_delta,
            "authors_tokenization": self.authors,
            "fit": "authors" if self.authors_fit else "huber_minimum",
            "units": {
                "non_vocab_params": "millions",
                "vocab_params": "millions",
                "tokens": "billions",
            },
        }

    def fit(self, inputs, y: np.ndarray, warm: Fit | None) -> Fit:
        """The method's fit of the law on `inputs`: from the grid's best points, or for a refit
        (`warm`) from the main fit's optimum (and, corrected and weakly identified, the grid's
        best points away from it)."""
        if self.authors_fit:
            starts = None if warm is None else [authors_start(warm.coefficients)]
            found, selection = fit_loss_authors(inputs, y, self.delta, starts)
            found.standard_errors = huber_standard_errors(
                law_jacobian(inputs, found.params), found.residuals, self.delta
            )
            result = fit_result(found, y)
            result.details["fit"].update(selection)
            return result
        starts = None
        if warm is not None:
            main = np.array([warm.coefficients[name] for name in PARAMETERS])
            starts = [main]
            if weakly_identified(warm):
                if self.grid is None:
                    self.grid = GridStarts(*inputs)
                starts += self.grid.best(y, self.delta, main[4:], REFIT_GRID_STARTS)
        return fit_result(fit_loss(*inputs, y, self.delta, starts=starts), y)

    def __call__(
        self, loss_u: np.ndarray, f: TokensPerChar, warm: Fit | None, full: bool = False
    ) -> Fit:
        """Fit on L_u (f is fixed by the design); from `warm`'s parameters when given, else
        from the method's grid of starts."""
        y = loss_u[self.rows]
        result = self.fit(self.inputs, y, warm)
        if full:
            result.details["options"] = dict(self.options)
            if self.authors:
                result.details["true_tokenization"] = self.fit(self.true_inputs, y, None).to_json()
            self._log(result)
        return result

    def _log(self, result: Fit) -> None:
        coefficients = result.coefficients
        log.info("parametric: %s", ", ".join(f"{k}={coefficients[k]:.4g}" for k in PARAMETERS))
        if "A2" in result.quality["on_bound"]:
            log.warning(
                "parametric: A2 ended at 0 - in this fit a larger vocabulary does not lower the "
                "loss at fixed tokens, so the predicted V goes to the smallest V searched (%d)",
                PREDICTION_VOCAB[0],
            )
        weak = result.quality["identification"]["weak"]
        if weak:
            log.warning(
                "parametric: weakly identified (90%% interval over %gx): %s",
                WEAK_IDENTIFICATION_FACTOR,
                ", ".join(weak),
            )
        if self.authors:
            log.warning(
                "parametric: fitted with the authors' f(V/1000) token counts (compatibility "
                "switch); the fit with true token counts is under 'true_tokenization'"
            )


def estimate_parametric(runs: RunsTable, f: TokensPerChar, **options) -> Fit:
    """Fit on the runs with the options of `estimate.parametric` and the method; with the
    authors' method or `authors_tokenization`, D = H f(V / 1000) in the fit (the authors'
    published behaviour) and the fit with true token counts is reported beside it."""
    fitter = ParametricFitter(runs, f, **options)
    return fitter(runs.frame["loss_u"].to_numpy(float), f, None, full=True)


def optimal_vocab(
    p: dict[str, float], nnv: float, d_model: float, flops_budget: float
) -> tuple[float, bool]:
    """argmin over V of L_u(Nnv, V d, C / (6 (Nnv + V d))), and whether it lies on the edge of
    the searched range (then the fit says only 'smaller' or 'larger than this')."""

    def objective(log_v: float) -> float:
        v = np.exp(log_v)
        tokens = flops_budget / (6.0 * (nnv + v * d_model))
        return float(loss_u(p, nnv, v * d_model, tokens))

    low, high = np.log(PREDICTION_VOCAB[0]), np.log(PREDICTION_VOCAB[1])
    result = minimize_scalar(
        objective, bounds=(low, high), method="bounded", options={"xatol": 1e-10}
    )
    at_bound = bool(result.x - low < 1e-3 or high - result.x < 1e-3)
    return float(np.exp(result.x)), at_bound


def predict(
    coefficients: dict[str, Any],
    nnv: float,
    d_model: float,
    budget: float | None,
    optimal: float | None,
) -> Answer:
    """The V that minimises L_u at `budget`, which approach 3 needs (any budget, not only the
    compute-optimal one)."""
    if budget is None:
        raise ValueError(
            "the parametric approach needs a budget (give --flops, or coefficients that include "
            "approach 1)"
        )
    vocab_size, at_bound = optimal_vocab(coefficients, nnv, d_model, budget)
    edge = None
    if at_bound:
        edge = "smallest" if vocab_size < np.sqrt(np.prod(PREDICTION_VOCAB)) else "largest"
    return Answer(vocab_size, vocab_size * d_model, budget, at_bound, edge)
