"""Approach 2 (derivative): the V that minimises the compute to process a fixed text,
dC/dV = 0 for C(V) = 6 (Nnv + V d) H f(V), solved over a grid of Nnv (d learnt from the trained
models, or the paper's width mapping), a power law Nv ∝ Nnv^gamma through the solutions, and
the curve anchored at the empirically best Nv of the smallest model at one compute budget
(docs/design.md, "Approach 2")."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.interpolate import interp1d
from scipy.optimize import brentq

from vocabscale.accounting import width_for_nnv
from vocabscale.estimate.fitting import huber_least_squares, r_squared
from vocabscale.estimate.methods import method_named
from vocabscale.estimate.results import Answer, Fit
from vocabscale.runs.table import RunsTable, RunsTableError, width_from_runs
from vocabscale.tokens_per_char import TOKENS_PER_CHAR_MAX_VOCAB, TokensPerChar

log = logging.getLogger(__name__)

#: Search interval for the stationary point of C(V).
SEARCH_VOCAB = (16.0, float(TOKENS_PER_CHAR_MAX_VOCAB))
#: The budget of the authors' anchor: the paper's smallest model at 2.7e17 FLOPs.
AUTHORS_ANCHOR_FLOPS = 2.7e17


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


def loss_at_budget_authors(run: pd.DataFrame, budget: float) -> float:
    """The authors' reading: a quadratic spline of L_u over C through the checkpoints
    (`interp1d(kind="quadratic", fill_value="extrapolate")`), extrapolated beyond them."""
    ordered = run.sort_values("flops")
    kind = "quadratic" if len(ordered) >= 3 else "linear"
    curve = interp1d(
        ordered["flops"].to_numpy(float),
        ordered["loss_u"].to_numpy(float),
        kind=kind,
        fill_value="extrapolate",
    )
    return float(curve(budget))


def common_budget_range(model: pd.DataFrame) -> tuple[float, float]:
    """The compute range every run of `model` covers: (largest first checkpoint, smallest
    last checkpoint); empty when the first exceeds the second."""
    reach = model.groupby("run")["flops"].agg(["min", "max"])
    return float(reach["min"].max()), float(reach["max"].min())


def vocab_losses_at_budget(
    model: pd.DataFrame, budget: float, reader=loss_at_budget
) -> pd.DataFrame:
    """Per vocabulary size of one model's runs: L_u at `budget` (runs of one V averaged) and d,
    sorted by V."""
    losses = [
        {
            "vocab_size": float(points["vocab_size"].iloc[0]),
            "d_model": float(points["d_model"].iloc[0]),
            "loss_u": reader(points, budget),
        }
        for _, points in model.groupby("run")
    ]
    return per_vocab_size(pd.DataFrame(losses))


def per_vocab_size(readings: pd.DataFrame) -> pd.DataFrame:
    """One row per V from one row per run (vocab_size, d_model, loss_u): the runs of one V
    averaged, sorted by V."""
    return readings.groupby("vocab_size", as_index=False).agg(
        loss_u=("loss_u", "mean"), d_model=("d_model", "first")
    )


def quadratic_vertex(vocab_sizes: np.ndarray, losses: np.ndarray) -> float | None:
    """The V at the vertex of a quadratic in ln V fitted to L_u over the swept V within a factor
    e of the best one (at least the three nearest): a local fit, since L_u over a wide sweep is
    not symmetric in ln V. None when the quadratic has no minimum."""
    x = np.log(np.asarray(vocab_sizes, dtype=float))
    best = x[int(np.argmin(losses))]
    window = np.abs(x - best) <= 1.0
    if window.sum() < 3:
        window = np.isin(np.arange(len(x)), np.argsort(np.abs(x - best))[:3])
    if window.sum() < 3:
        return None
    curvature, slope, _ = np.polyfit(x[window], np.asarray(losses)[window], 2)
    if curvature <= 0:
        return None
    return float(np.exp(np.clip(-slope / (2 * curvature), -700, 700)))


def anchor_from_losses(table: pd.DataFrame, anchor_method: str) -> dict[str, Any]:
    """The anchor V of one model from its L_u per V at the anchor budget: the vertex of the
    local quadratic (`vertex`), or the best swept V (`argmin`, and the fallback when the
    quadratic has no minimum, which is then flagged)."""
    best = table.loc[table["loss_u"].idxmin()]
    swept = table["vocab_size"].to_numpy(float)
    vertex = quadratic_vertex(swept, table["loss_u"].to_numpy(float)) if len(swept) >= 3 else None
    vocab = vertex if anchor_method == "vertex" and vertex is not None else best["vocab_size"]
    d_model = float(best["d_model"])
    return {
        "vocab_size": float(vocab),
        "d_model": d_model,
        "vocab_params": float(vocab * d_model),
        "anchor_method": anchor_method,
        "best_swept_vocab_size": float(best["vocab_size"]),
        "vertex": vertex,
        "no_vertex": anchor_method == "vertex" and vertex is None,
        "outside_sweep": bool(vocab < swept.min() or vocab > swept.max()),
        "at_sweep_edge": bool(best["vocab_size"] in (swept.min(), swept.max())),
    }


def anchor_budget(runs: RunsTable, model: pd.DataFrame, budget: float | None, authors: bool):
    """The budget at which the anchor is read: the given one, else the paper's 2.7e17 for the
    authors' method (extrapolating runs that stop before it), else the largest every run of the
    smallest model reaches (nothing extrapolated)."""
    low, high = common_budget_range(model)
    if authors:
        return budget or AUTHORS_ANCHOR_FLOPS, not low <= (budget or AUTHORS_ANCHOR_FLOPS) <= high
    if budget is None:
        return high, False
    if not low <= budget <= high:
        raise RunsTableError(
            f"{runs.source}: derivative anchor budget {budget:.4g} FLOPs is outside "
            f"[{low:.4g}, {high:.4g}], the range every run of the smallest model covers"
        )
    return budget, False


def smallest_model(runs: RunsTable) -> pd.DataFrame:
    frame = runs.frame
    smallest = frame["non_vocab_params"].min()
    model = frame[frame["non_vocab_params"] == smallest]
    if model["vocab_size"].nunique() < 2:
        raise RunsTableError(
            f"{runs.source}: the smallest model (Nnv={smallest:.4g}) was trained with "
            f"{model['vocab_size'].nunique()} vocabulary size(s); the anchor needs at least 2"
        )
    return model


def empirical_anchor(
    runs: RunsTable,
    budget: float | None = None,
    anchor_method: str = "argmin",
    authors: bool = False,
) -> dict[str, Any]:
    """The anchor of the smallest model at `budget` (see `anchor_budget`): the best swept V
    (`argmin`) or the vertex of L_u over ln V there (`vertex`)."""
    model = smallest_model(runs)
    budget, extrapolated = anchor_budget(runs, model, budget, authors)
    reader = loss_at_budget_authors if authors else loss_at_budget
    table = vocab_losses_at_budget(model, budget, reader)
    anchor = anchor_from_losses(table, "argmin" if authors else anchor_method)
    return {
        "nnv": float(model["non_vocab_params"].iloc[0]),
        **anchor,
        "flops": budget,
        "extrapolated": extrapolated,
        "losses": table.to_dict(orient="records"),
    }


@dataclass(frozen=True)
class DerivativeOptions:
    """The options of `estimate.derivative` and the method (docs/design.md, "Approach 2")."""

    method: str
    nnv_grid: list[float] | None
    anchor_flops: float | None
    anchor_nnv: float | None
    anchor_vocab_size: float | None
    anchor_d_model: int | None
    anchor_method: str
    huber_delta: float
    grid_widths: str
    exponent_through_anchor: bool

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


class GivenAnchor:
    """The anchor given on the command line or in params: the same for every refit."""

    def __init__(self, given: dict[str, float]):
        self.given = given

    def __call__(self, loss_u: np.ndarray | None) -> dict[str, Any]:
        return {
            **{key: float(self.given[key]) for key in ("nnv", "vocab_size", "d_model")},
            "vocab_params": float(self.given["vocab_size"] * self.given["d_model"]),
            "flops": None,
            "source": "given",
        }


class RunsAnchor:
    """The corrected method's anchor: each run of the smallest model read at the anchor budget
    (linear in ln C, so a fixed weighting of the rows: refits only multiply), the runs of one
    V averaged, and the vertex (or the argmin) of L_u over ln V."""

    def __init__(self, runs: RunsTable, budget: float | None, anchor_method: str):
        model = smallest_model(runs)
        self.budget, _ = anchor_budget(runs, model, budget, authors=False)
        self.nnv, self.anchor_method = float(model["non_vocab_params"].iloc[0]), anchor_method
        rows, self.weights = [], np.zeros((model["run"].nunique(), len(runs.frame)))
        for i, (_, run) in enumerate(model.groupby("run")):
            run = run.sort_values("flops")
            for row in run.index:
                unit = (run.index == row).astype(float)
                self.weights[i, row] = np.interp(np.log(self.budget), np.log(run["flops"]), unit)
            rows.append(
                {
                    "vocab_size": float(run["vocab_size"].iloc[0]),
                    "d_model": float(run["d_model"].iloc[0]),
                }
            )
        self.readings = pd.DataFrame(rows)

    def __call__(self, loss_u: np.ndarray) -> dict[str, Any]:
        table = per_vocab_size(self.readings.assign(loss_u=self.weights @ loss_u))
        return {
            "nnv": self.nnv,
            **anchor_from_losses(table, self.anchor_method),
            "flops": self.budget,
            "extrapolated": False,
            "losses": table.to_dict(orient="records"),
            "source": "runs",
        }


class AuthorsAnchor:
    """The authors' anchor: the best swept V of the smallest model, each run read by a
    quadratic spline in C (not linear in L_u, so every refit reads the runs again)."""

    def __init__(self, runs: RunsTable, budget: float | None):
        self.runs, self.budget = runs, budget
        smallest_model(runs)  # fail now, not at the first refit

    def __call__(self, loss_u: np.ndarray) -> dict[str, Any]:
        runs = RunsTable(self.runs.frame.assign(loss_u=loss_u), self.runs.source)
        found = empirical_anchor(runs, self.budget, "argmin", authors=True)
        return {**found, "source": "runs"}


def anchor_reader(runs: RunsTable | None, options: DerivativeOptions):
    """How this fit finds its anchor: given, or read from the runs by the method's rule."""
    given = options.given_anchor()
    if given is not None:
        return GivenAnchor(given)
    if runs is None:
        raise ValueError("the derivative approach needs runs or an explicit anchor")
    if method_named(options.method).authors_anchor:
        return AuthorsAnchor(runs, options.anchor_flops)
    return RunsAnchor(runs, options.anchor_flops, options.anchor_method)


class DerivativeFitter:
    """Approach 2 prepared on a table: the Nnv grid, the widths and the anchor's reading are
    fixed; calling it with L_u (row for row) and f re-reads the anchor and re-solves gamma."""

    def __init__(self, runs: RunsTable | None, f: TokensPerChar, **options: Any):
        self.settings = DerivativeOptions(**options)
        self.anchor = anchor_reader(runs, self.settings)
        nnv_grid, self.grid_source = self.settings.nnv_grid, "given"
        if nnv_grid is None:
            if runs is None:
                raise ValueError("without runs the derivative approach needs an explicit nnv_grid")
            nnv_grid, self.grid_source = (
                sorted(runs.frame["non_vocab_params"].unique()),
                "trained models",
            )
        self.nnv_grid = [float(n) for n in nnv_grid]
        self.width = grid_width_rule(self.settings.grid_widths, runs)
        self.exponents: dict[tuple[float, ...], dict[str, Any]] = {}
        authors = method_named(self.settings.method).authors_anchor
        self.options = {
            "method": self.settings.method,
            "anchor_flops": self.settings.anchor_flops,
            "anchor": self.settings.given_anchor(),
            "anchor_method": "argmin" if authors else self.settings.anchor_method,
            "huber_delta": self.settings.huber_delta,
            "nnv_grid": self.nnv_grid,
            "nnv_grid_source": self.grid_source,
            "grid_widths": self.settings.grid_widths,
            "exponent_through_anchor": self.settings.exponent_through_anchor,
        }

    def exponent(self, f: TokensPerChar, anchor: dict[str, Any]) -> dict[str, Any]:
        through = None
        if self.settings.exponent_through_anchor:
            through = (anchor["nnv"], anchor["d_model"])
        key = (f.a, f.b, f.c, *(through or ()))
        if key not in self.exponents:
            self.exponents[key] = fit_exponent(
                self.nnv_grid, self.width, f, self.settings.huber_delta, through
            )
        return self.exponents[key]

    def __call__(
        self, loss_u: np.ndarray, f: TokensPerChar, warm: Fit | None, full: bool = False
    ) -> Fit:
        """Fit on L_u with f (`warm` is not needed: gamma is a root-finding and one fit)."""
        anchor = self.anchor(loss_u)
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
