"""Approach 2 (derivative): the V that minimises the compute to process a fixed text,
dC/dV = 0 for C(V) = 6 (Nnv + V d) H f(V), solved over a grid of Nnv (d learnt from the trained
models, or the paper's width mapping), a power law Nv ∝ Nnv^gamma through the solutions, and
the curve anchored at the empirically best Nv of the smallest model at its compute-optimal
budget (anchor.py; docs/design.md, "Approach 2"). The authors' gamma is in authors.py."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import brentq

from vocabscale.accounting import width_for_nnv
from vocabscale.config import defaults
from vocabscale.estimate.anchor import (
    ANCHOR_BUDGETS,
    AuthorsAnchor,
    GivenAnchor,
    OptimalBudget,
    RunsAnchor,
    smallest_model,
)
from vocabscale.estimate.authors import PAPER_NNV_GRID, authors_exponent
from vocabscale.estimate.fitting import huber_least_squares, r_squared
from vocabscale.estimate.methods import method_named
from vocabscale.estimate.results import Answer, Fit
from vocabscale.runs.table import RunsTable, RunsTableError, width_from_runs
from vocabscale.tokens_per_char import TOKENS_PER_CHAR_MAX_VOCAB, TokensPerChar

log = logging.getLogger(__name__)

#: Search interval for the stationary point of C(V).
SEARCH_VOCAB = (16.0, float(TOKENS_PER_CHAR_MAX_VOCAB))


def solve_vocab(nnv: float, d_model: float, f: TokensPerChar) -> tuple[float, bool]:
    """Solve d/dV [(Nnv + V d) f(V)] = d f(V) + (Nnv + V d) f'(V) = 0 for V, and say whether
    the answer is an end of the search interval [16, f's clamp) rather than a root: the upper
    end when C(V) still falls there (f keeps dropping faster than the head grows; with a
    linear f this happens at every Nnv), the lower end when it rises everywhere."""

    def slope(log_v: float) -> float:
        v = np.exp(log_v)
        return float(d_model * f(v) + (nnv + v * d_model) * f.derivative(v))

    low = np.log(SEARCH_VOCAB[0])
    high = np.log(min(SEARCH_VOCAB[1], f.max_vocab)) - 1e-9
    if slope(low) >= 0:
        return float(np.exp(low)), True
    if slope(high) <= 0:
        return float(np.exp(high)), True
    return float(np.exp(brentq(slope, low, high, xtol=1e-12))), False


def compute_optimal_vocab(nnv: float, d_model: float, f: TokensPerChar) -> float:
    """The V that minimises the compute to process a fixed text (see `solve_vocab`)."""
    return solve_vocab(nnv, d_model, f)[0]


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


def solve_grid(nnv_grid, width: WidthRule, f: TokensPerChar) -> pd.DataFrame:
    """The derivative solution at every Nnv of the grid (sorted), with its width."""
    nnv = np.asarray(sorted(nnv_grid), dtype=float)
    if len(np.unique(nnv)) < 2:
        raise ValueError("the derivative exponent needs at least two distinct Nnv in nnv_grid")
    widths = np.array([float(width(n)) for n in nnv])
    solved = [solve_vocab(n, d, f) for n, d in zip(nnv, widths)]
    vocab = np.array([v for v, _ in solved])
    return pd.DataFrame(
        {
            "nnv": nnv,
            "d_model": widths,
            "vocab_size": vocab,
            "vocab_params": vocab * widths,
            "at_search_bound": [bound for _, bound in solved],
        }
    )


def exponent_through(x, y, through, f: TokensPerChar, huber_delta: float, slope_guess: float):
    """gamma of a line through the anchor model's own solution (no free intercept): (gamma,
    its intercept, the objective, whether it converged, the anchor model's solution)."""
    through_nnv, through_d = through
    through_vocab = compute_optimal_vocab(through_nnv, through_d, f)
    x0, y0 = np.log(through_nnv), np.log(through_vocab * through_d)
    dx, dy = x - x0, y - y0
    start = float(dx @ dy / (dx @ dx)) if dx @ dx > 0 else slope_guess
    fit = huber_least_squares(lambda p: p[0] * dx - dy, [[start]], huber_delta, ["gamma"])
    gamma = float(fit.params[0])
    solution = {
        "nnv": float(through_nnv),
        "d_model": float(through_d),
        "vocab_size": float(through_vocab),
        "vocab_params": float(through_vocab * through_d),
    }
    return gamma, y0 - gamma * x0, fit.objective, fit.converged, solution


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
    solutions = solve_grid(nnv_grid, width, f)
    x, y = np.log(solutions["nnv"].to_numpy()), np.log(solutions["vocab_params"].to_numpy())
    ols_slope, ols_intercept = np.polyfit(x, y, 1)
    free = huber_least_squares(
        lambda p: p[0] + p[1] * x - y, [[ols_intercept, ols_slope]], huber_delta, ["log_k", "gamma"]
    )
    result: dict[str, Any] = {
        "gamma_free_intercept": float(free.params[1]),
        "gamma_least_squares": float(ols_slope),
    }
    if through is None:
        (log_k, gamma), objective, converged = free.params, free.objective, free.converged
        result["method"] = "Huber on ln Nv = ln k + gamma ln Nnv (free intercept)"
    else:
        gamma, log_k, objective, converged, solution = exponent_through(
            x, y, through, f, huber_delta, ols_slope
        )
        result["method"] = "Huber on ln(Nv/Nv_anchor) = gamma ln(Nnv/Nnv_anchor) (through anchor)"
        result["through"] = solution
    result.update(
        gamma=float(gamma),
        fit={
            "objective": float(objective),
            "r_squared": r_squared(y, log_k + gamma * x),
            "converged": converged,
        },
        solutions=[
            {**row, "at_search_bound": bool(row["at_search_bound"])}
            for row in solutions.to_dict(orient="records")
        ],
        solutions_at_search_bound=int(solutions["at_search_bound"].sum()),
    )
    return result


@dataclass(frozen=True)
class DerivativeOptions:
    """The options of `estimate.derivative` and the method (docs/design.md, "Approach 2"), and
    approach 1's (`isoflops`; None: the schema's), which gives the anchor's budget."""

    method: str
    nnv_grid: list[float] | None
    anchor_flops: float | None
    anchor_budget: str
    anchor_nnv: float | None
    anchor_vocab_size: float | None
    anchor_d_model: int | None
    anchor_method: str
    huber_delta: float
    grid_widths: str
    exponent_through_anchor: bool
    isoflops: dict[str, Any] | None = None

    def given_anchor(self) -> dict[str, float] | None:
        """The anchor that anchor_nnv, anchor_vocab_size and anchor_d_model give (all three, or
        none: then the anchor comes from the runs)."""
        given = {"nnv": self.anchor_nnv, "vocab_size": self.anchor_vocab_size}
        given["d_model"] = self.anchor_d_model
        if all(value is None for value in given.values()):
            return None
        missing = [f"anchor_{key}" for key, value in given.items() if value is None]
        if missing:
            raise ValueError(
                f"estimate.derivative: an explicit anchor needs {', '.join(missing)} too"
            )
        return given


def optimal_budget(runs: RunsTable, f: TokensPerChar, options: DerivativeOptions):
    """Approach 1's Nnv law, which places the anchor at its model's compute-optimal budget, and
    None with the reason when approach 1 cannot be fitted on these runs (the anchor is then read
    at the largest budget every run reaches)."""
    settings = {**defaults("estimate.isoflops"), **(options.isoflops or {})}
    nnv = float(smallest_model(runs)["non_vocab_params"].iloc[0])
    try:
        optimal = OptimalBudget(runs, f, nnv, {**settings, "method": options.method})
        optimal(runs.frame["loss_u"].to_numpy(float))
    except RunsTableError as error:
        log.warning(
            "derivative: approach 1 cannot be fitted (%s); the anchor is read at the largest "
            "budget every run reaches instead of its model's compute-optimal budget",
            error,
        )
        return None, str(error)
    return optimal, None


def anchor_reader(runs: RunsTable | None, f: TokensPerChar, options: DerivativeOptions):
    """How this fit finds its anchor: given, or read from the runs by the method's rule (the
    corrected method at `anchor_flops`, else by `anchor_budget`)."""
    given = options.given_anchor()
    if given is not None:
        return GivenAnchor(given)
    if runs is None:
        raise ValueError("the derivative approach needs runs or an explicit anchor")
    if method_named(options.method).authors_anchor:
        return AuthorsAnchor(runs, options.anchor_flops)
    if options.anchor_budget not in ANCHOR_BUDGETS:
        raise ValueError(
            f"estimate.derivative.anchor_budget must be one of {', '.join(ANCHOR_BUDGETS)}, "
            f"not {options.anchor_budget!r}"
        )
    optimal, unavailable = None, None
    if options.anchor_flops is None and options.anchor_budget == "compute_optimal":
        optimal, unavailable = optimal_budget(runs, f, options)
    return RunsAnchor(runs, options.anchor_flops, options.anchor_method, optimal, unavailable)


class DerivativeFitter:
    """Approach 2 prepared on a table: the Nnv grid, the widths and the anchor's reading are
    fixed; calling it with L_u (row for row) and f re-reads the anchor (and, at the
    compute-optimal budget, refits approach 1's Nnv law) and re-solves gamma."""

    def __init__(self, runs: RunsTable | None, f: TokensPerChar, **options: Any):
        self.settings = DerivativeOptions(**options)
        chosen = method_named(self.settings.method)
        self.authors_exponent = chosen.authors_exponent
        self.anchor = anchor_reader(runs, f, self.settings)
        nnv_grid, self.grid_source = self.settings.nnv_grid, "given"
        if nnv_grid is None and self.authors_exponent:
            nnv_grid, self.grid_source = PAPER_NNV_GRID, "the paper's models (rounded)"
        elif nnv_grid is None:
            if runs is None:
                raise ValueError("without runs the derivative approach needs an explicit nnv_grid")
            nnv_grid, self.grid_source = (
                sorted(runs.frame["non_vocab_params"].unique()),
                "trained models",
            )
        self.nnv_grid = [float(n) for n in nnv_grid]
        widths = "paper" if self.authors_exponent else self.settings.grid_widths
        self.width = grid_width_rule(widths, runs)
        self.exponents: dict[tuple[float, ...], dict[str, Any]] = {}
        self.options = {
            "method": self.settings.method,
            "anchor_flops": self.settings.anchor_flops,
            "anchor_budget": "authors" if chosen.authors_anchor else self.settings.anchor_budget,
            "anchor": self.settings.given_anchor(),
            "anchor_method": "argmin" if chosen.authors_anchor else self.settings.anchor_method,
            "huber_delta": self.settings.huber_delta,
            "nnv_grid": self.nnv_grid,
            "nnv_grid_source": self.grid_source,
            "grid_widths": widths,
            "exponent_through_anchor": self.authors_exponent
            or self.settings.exponent_through_anchor,
        }

    def exponent(self, f: TokensPerChar, anchor: dict[str, Any]) -> dict[str, Any]:
        through = None
        if self.settings.exponent_through_anchor and not self.authors_exponent:
            through = (anchor["nnv"], anchor["d_model"])
        key = (f.a, f.b, f.c, *(through or ()))
        if key not in self.exponents:
            delta = self.settings.huber_delta
            self.exponents[key] = (
                authors_exponent(self.nnv_grid, f, delta)
                if self.authors_exponent
                else fit_exponent(self.nnv_grid, self.width, f, delta, through)
            )
        return self.exponents[key]

    def __call__(
        self, loss_u: np.ndarray, f: TokensPerChar, warm: Fit | None, full: bool = False
    ) -> Fit:
        """Fit on L_u with f; `warm` (the main fit) starts approach 1's refit of the anchor
        budget (gamma is a root-finding and one fit, and needs no start)."""
        anchor = self.anchor(loss_u, None if warm is None else warm.coefficient("anchor"))
        exponent = self.exponent(f, anchor)
        flags = []
        if exponent["solutions_at_search_bound"]:
            flags.append("derivative solutions at the search bound")
        if not exponent["fit"]["converged"]:
            flags.append("gamma fit did not converge")
        if anchor.get("no_vertex"):
            flags.append("no vertex at the anchor")
        fit = Fit({"gamma": exponent["gamma"], "anchor": anchor}, flags)
        if full:
            fit.details = {"exponent_fit": exponent, "options": dict(self.options)}
            log_fit(fit)
        return fit


def log_fit(fit: Fit) -> None:
    exponent, anchor = fit.details["exponent_fit"], fit.coefficients["anchor"]
    log.info(
        "derivative: gamma = %.4f (free intercept %.4f, least squares %.4f), anchor Nv = "
        "%.4g at Nnv = %.4g",
        exponent["gamma"],
        exponent["gamma_free_intercept"],
        exponent["gamma_least_squares"],
        anchor["vocab_params"],
        anchor["nnv"],
    )
    if exponent["solutions_at_search_bound"]:
        log.warning(
            "derivative: %d of %d solutions of dC/dV = 0 are at the end of the V searched "
            "(f(V) does not bend enough there); gamma is not measured",
            exponent["solutions_at_search_bound"],
            len(exponent["solutions"]),
        )
    if anchor.get("at_sweep_edge"):
        log.warning(
            "derivative anchor: the best V (%d) is at the edge of the sweep; the true "
            "optimum may lie outside it",
            anchor["best_swept_vocab_size"],
        )
    for flag in fit.flags or []:
        log.warning("derivative: %s", flag)


def estimate_derivative(runs: RunsTable | None, f: TokensPerChar, **options) -> Fit:
    """Approach 2 with the options of `estimate.derivative` and the method. gamma from f(V)
    over `nnv_grid` (None: the trained models' Nnv, as the paper solved at its seven models);
    the anchor given explicitly (anchor_nnv, anchor_vocab_size, anchor_d_model), else read
    from the smallest model's runs."""
    fitter = DerivativeFitter(runs, f, **options)
    loss = None if runs is None else runs.frame["loss_u"].to_numpy(float)
    return fitter(loss, f, None, full=True)


def predict_vocab_params(coefficients: dict[str, Any], nnv: float) -> float:
    anchor = coefficients["anchor"]
    return float(anchor["vocab_params"] * (nnv / anchor["nnv"]) ** coefficients["gamma"])


def predict(
    coefficients: dict[str, Any],
    nnv: float,
    d_model: float,
    budget: float | None,
    optimal: float | None,
) -> Answer:
    """V and Nv on the anchored curve; the budget shown is approach 1's optimum for Nnv."""
    nv = predict_vocab_params(coefficients, nnv)
    return Answer(nv / d_model, nv, optimal)
