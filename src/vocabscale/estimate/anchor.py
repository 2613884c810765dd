"""Approach 2's anchor: the best V of the smallest model at one compute budget, where the
derivative curve Nv = Nv_anchor (Nnv / Nnv_anchor)^gamma is pinned (docs/design.md, "Approach
2"). The budget is the anchor model's compute-optimal one, from approach 1's relation
Nnv = e^K1 C^a refitted on the same L_u (so refits carry its uncertainty); or the largest every
run of the model reaches; or a given one; or, under the authors' method, the paper's 2.7e17."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.interpolate import interp1d

from vocabscale.estimate.isoflops import IsoflopsFitter, optimal_flops
from vocabscale.runs.table import RunsTable, RunsTableError
from vocabscale.tokens_per_char import TokensPerChar

#: The budget of the authors' anchor: the paper's smallest model at 2.7e17 FLOPs.
AUTHORS_ANCHOR_FLOPS = 2.7e17
#: The authors' anchor model: Nnv = 33,000,000 exactly, whatever the table says (33,222,784).
AUTHORS_ANCHOR_NNV = 33e6
#: Where the corrected method reads its anchor (`estimate.derivative.anchor_budget`).
ANCHOR_BUDGETS = ("compute_optimal", "largest_common")


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
    """The anchor of the smallest model at `budget`: the given one (within the range every
    run covers), else the paper's 2.7e17 for the authors' method (extrapolating runs that stop
    before it), else the largest every run reaches; the best swept V (`argmin`) or the vertex of
    L_u over ln V there (`vertex`)."""
    model = smallest_model(runs)
    low, high = common_budget_range(model)
    extrapolated = False
    if authors:
        budget = budget or AUTHORS_ANCHOR_FLOPS
        extrapolated = not low <= budget <= high
    elif budget is None:
        budget = high
    else:
        check_in_range(runs, budget, low, high)
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


def check_in_range(runs: RunsTable, budget: float, low: float, high: float) -> None:
    if not low <= budget <= high:
        raise RunsTableError(
            f"{runs.source}: derivative anchor budget {budget:.4g} FLOPs is outside "
            f"[{low:.4g}, {high:.4g}], the range every run of the smallest model covers"
        )


class GivenAnchor:
    """The anchor given on the command line or in params: the same for every refit."""

    def __init__(self, given: dict[str, float]):
        self.given = given

    def __call__(self, loss_u: np.ndarray | None, warm: dict[str, Any] | None = None):
        return {
            **{key: float(self.given[key]) for key in ("nnv", "vocab_size", "d_model")},
            "vocab_params": float(self.given["vocab_size"] * self.given["d_model"]),
            "flops": None,
            "source": "given",
        }


class OptimalBudget:
    """The anchor model's compute-optimal budget, C = (Nnv / e^K1)^(1/a), with approach 1's
    Nnv law fitted on the L_u it is given (the `estimate.isoflops` options, the same method)."""

    def __init__(self, runs: RunsTable, f: TokensPerChar, nnv: float, options: dict[str, Any]):
        self.fitter = IsoflopsFitter(runs, f, **options)
        self.nnv = nnv

    def __call__(self, loss_u: np.ndarray, warm: dict[str, Any] | None = None) -> dict[str, Any]:
        start = None
        if warm and "compute_optimal_K1" in warm:
            start = (warm["compute_optimal_K1"], warm["compute_optimal_exponent"])
        k1, exponent, _ = self.fitter.nnv_law(loss_u, start)
        law = {"K1": k1, "nnv_exponent": exponent}
        return {
            "compute_optimal_flops": optimal_flops(law, self.nnv),
            "compute_optimal_K1": k1,
            "compute_optimal_exponent": exponent,
        }


class RunsAnchor:
    """The corrected method's anchor: each run of the smallest model read at the anchor budget
    (linear in ln C between its checkpoints), the runs of one V averaged, and the vertex (or the
    argmin) of L_u over ln V. The budget is `budget` when given, else the model's compute-optimal
    one (`optimal`, refitted on every L_u; held to the range every run covers, and flagged,
    when it lies outside), else the largest every run reaches (`unavailable`: why the
    compute-optimal one could not be had)."""

    def __init__(
        self,
        runs: RunsTable,
        budget: float | None,
        anchor_method: str,
        optimal: OptimalBudget | None = None,
        unavailable: str | None = None,
    ):
        model = smallest_model(runs)
        self.low, self.high = common_budget_range(model)
        if budget is not None:
            check_in_range(runs, budget, self.low, self.high)
        self.budget, self.optimal, self.unavailable = budget, optimal, unavailable
        self.rule = "compute_optimal" if optimal is not None else "largest_common"
        if budget is not None:
            self.rule = "given"
        self.nnv, self.anchor_method = float(model["non_vocab_params"].iloc[0]), anchor_method
        self.runs = []
        for _, run in model.groupby("run"):
            run = run.sort_values("flops")
            self.runs.append((np.log(run["flops"].to_numpy(float)), run.index.to_numpy()))
        self.readings = (
            model.groupby("run")
            .agg(vocab_size=("vocab_size", "first"), d_model=("d_model", "first"))
            .astype(float)
        )

    def read_budget(self, loss_u: np.ndarray, warm: dict[str, Any] | None) -> dict[str, Any]:
        """The budget of this fit and how it was chosen."""
        if self.optimal is None:
            budget = self.high if self.budget is None else self.budget
            found = {"flops": float(budget), "budget_rule": self.rule}
            if self.unavailable:
                found["compute_optimal_unavailable"] = self.unavailable
            return found
        found = self.optimal(loss_u, warm)
        wanted = found["compute_optimal_flops"]
        clamped = "below" if wanted < self.low else "above" if wanted > self.high else None
        budget = float(min(max(wanted, self.low), self.high))
        return {"flops": budget, "budget_rule": self.rule, **found, "budget_clamped": clamped}

    def __call__(self, loss_u: np.ndarray, warm: dict[str, Any] | None = None) -> dict[str, Any]:
        budget = self.read_budget(loss_u, warm)
        at = np.log(budget["flops"])
        losses = [np.interp(at, log_c, loss_u[rows]) for log_c, rows in self.runs]
        table = per_vocab_size(self.readings.assign(loss_u=losses))
        return {
            "nnv": self.nnv,
            **anchor_from_losses(table, self.anchor_method),
            **budget,
            "budget_range": [self.low, self.high],
            "extrapolated": False,
            "losses": table.to_dict(orient="records"),
            "source": "runs",
        }


class AuthorsAnchor:
    """The authors' anchor: the best swept V of the smallest model, each run read by a
    quadratic spline in C (not linear in L_u, so every refit reads the runs again), placed at
    Nnv = 33,000,000 exactly as their script does (the table's own Nnv kept as `table_nnv`)."""

    def __init__(self, runs: RunsTable, budget: float | None):
        self.runs, self.budget = runs, budget
        smallest_model(runs)  # fail now, not at the first refit

    def __call__(self, loss_u: np.ndarray, warm: dict[str, Any] | None = None) -> dict[str, Any]:
        runs = RunsTable(self.runs.frame.assign(loss_u=loss_u), self.runs.source)
        found = empirical_anchor(runs, self.budget, "argmin", authors=True)
        return {
            **found,
            "nnv": AUTHORS_ANCHOR_NNV,
            "table_nnv": found["nnv"],
            "source": "runs",
            "budget_rule": "given" if self.budget else "authors",
        }
