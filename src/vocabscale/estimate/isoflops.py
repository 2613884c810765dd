"""Approach 1 (IsoFLOPs): the lower envelope of L_u against compute, densified between runs as
the authors did, and power laws of the optimal Nnv, Nv and H in C along it, fitted with a
Huber loss on log residuals (docs/design.md, "Approach 1"). Everything but L_u is fixed by the
table's design, so `IsoflopsFitter` prepares it once and refits any L_u quickly: the
bootstrap changes only L_u."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.interpolate import CloughTocher2DInterpolator, interp1d
from scipy.optimize import minimize, minimize_scalar
from scipy.spatial import Delaunay, QhullError
from scipy.special import huber

from vocabscale.accounting import flops, log_spaced, width_for_nnv
from vocabscale.estimate.fitting import huber_linear_regression, huber_objective, r_squared
from vocabscale.estimate.methods import method_named
from vocabscale.estimate.results import Answer, Fit
from vocabscale.runs.table import RunsTable, RunsTableError, width_from_runs
from vocabscale.tokens_per_char import TokensPerChar

log = logging.getLogger(__name__)

POINT_COLUMNS = ["non_vocab_params", "vocab_size", "d_model", "characters", "flops"]
#: The authors' starting points: K over linspace(-20, 15, 20), the exponent over
#: linspace(0, 1, 20) when it is free.
AUTHORS_INTERCEPT_STARTS = np.linspace(-20, 15, 20)
AUTHORS_EXPONENT_STARTS = np.linspace(0, 1, 20)


def authors_spaced(low: float, high: float, count: int) -> np.ndarray:
    """Log-spaced points as the authors' scripts make them, np.logspace over log10."""
    return np.logspace(np.log10(low), np.log10(high), count)


def _averaged(values: np.ndarray, groups: np.ndarray, counts: np.ndarray) -> np.ndarray:
    return np.bincount(groups, weights=values, minlength=len(counts)) / counts


@dataclass(frozen=True)
class RowGroups:
    """Rows of the runs table averaged into the points one interpolation runs through: the
    rows, the point each belongs to, and how many rows each point has."""

    rows: np.ndarray
    groups: np.ndarray
    counts: np.ndarray

    def averaged(self, loss_u: np.ndarray) -> np.ndarray:
        return _averaged(loss_u[self.rows], self.groups, self.counts)


@dataclass(frozen=True)
class PlaneInterpolation:
    """L_u of one V over the (Nnv, H) plane: its triangulation and the query points inside."""

    points: RowGroups
    triangulation: Delaunay
    query: np.ndarray

    def loss(self, loss_u: np.ndarray) -> np.ndarray:
        interpolate = CloughTocher2DInterpolator(self.triangulation, self.points.averaged(loss_u))
        return interpolate(self.query)


@dataclass(frozen=True)
class CurveInterpolation:
    """The last checkpoint's L_u of one model over V, read at a grid of V."""

    points: RowGroups
    vocab: np.ndarray
    grid: np.ndarray
    kind: str

    def loss(self, loss_u: np.ndarray) -> np.ndarray:
        averaged = self.points.averaged(loss_u)
        return interp1d(self.vocab, averaged, kind=self.kind, fill_value="extrapolate")(self.grid)


class Densifier:
    """The interpolated points of one table: what feeds each interpolation, its triangulation
    and the columns of every point it yields, all fixed; `loss(loss_u)` interpolates L_u.

    Per V, L_u over the (Nnv, H) plane (cubic, scattered: scipy's Clough-Tocher, as
    `griddata(method="cubic")`) at `nnv_points` pairs of log-spaced Nnv and H zipped index by
    index; per model, the last checkpoint's L_u over V at `vocab_points` log-spaced V, each
    trained on the model's maximum tokens (H = tokens / f(V)). Repeated (Nnv, H) points are
    averaged first. `log_coordinates` interpolates in ln Nnv, ln H and ln V (the corrected
    method); else, as the authors did, in Nnv, H and V, with the paper's widths everywhere.
    `width` gives d of an interpolated Nnv."""

    def __init__(
        self,
        frame: pd.DataFrame,
        f: TokensPerChar,
        nnv_points: int,
        vocab_points: int,
        log_coordinates: bool,
        width,
    ):
        self.to_axis = np.log if log_coordinates else np.asarray
        self.width, self.paper_widths = width, not log_coordinates
        self.spaced = log_spaced if log_coordinates else authors_spaced
        self.interpolations: list[PlaneInterpolation | CurveInterpolation] = []
        parts = []
        if frame["non_vocab_params"].nunique() >= 2:
            nnv = self.spaced(
                frame["non_vocab_params"].min(), frame["non_vocab_params"].max(), nnv_points
            )
            chars = self.spaced(frame["characters"].min(), frame["characters"].max(), nnv_points)
            for vocab_size, points in frame.groupby("vocab_size"):
                part = self._prepare_plane(points, float(vocab_size), nnv, chars, f)
                if part is not None:
                    parts.append(part)
        for nnv_value, runs in frame.groupby("non_vocab_params"):
            part = self._prepare_curve(runs, float(nnv_value), f, vocab_points)
            if part is not None:
                parts.append(part)
        self.points = pd.concat(parts, ignore_index=True) if parts else None

    def _prepare_plane(self, points, vocab_size, nnv, chars, f) -> pd.DataFrame | None:
        pairs = points[["non_vocab_params", "characters"]].to_numpy(float)
        groups, _ = pd.factorize(pd.MultiIndex.from_arrays(pairs.T))  # in the table's order
        unique = pairs[np.unique(groups, return_index=True)[1]]
        if len(np.unique(unique[:, 0])) < 2 or len(unique) < 4:
            return None
        try:
            triangulation = Delaunay(self.to_axis(unique))
        except (QhullError, ValueError):  # degenerate (collinear) point sets
            return None
        query = np.column_stack([self.to_axis(nnv), self.to_axis(chars)])
        inside = np.isfinite(
            CloughTocher2DInterpolator(triangulation, np.zeros(len(unique)))(query)
        )
        if not inside.any():
            return None
        counts = np.bincount(groups, minlength=len(unique)).astype(float)
        rows = RowGroups(points.index.to_numpy(), groups, counts)
        self.interpolations.append(PlaneInterpolation(rows, triangulation, query[inside]))
        d_model = np.asarray(self.width(nnv[inside]), dtype=float)
        tokens = chars[inside] * f(vocab_size)
        return pd.DataFrame(
            {
                "non_vocab_params": nnv[inside],
                "vocab_size": vocab_size,
                "d_model": d_model,
                "characters": chars[inside],
                "flops": flops(nnv[inside], vocab_size, d_model, tokens),
                "kind": "interpolated (Nnv, H)",
            }
        )

    def _prepare_curve(self, runs, nnv, f, count) -> pd.DataFrame | None:
        last = runs.loc[runs.groupby("run")["tokens"].idxmax()]
        vocab, groups = np.unique(last["vocab_size"].to_numpy(float), return_inverse=True)
        if len(vocab) < 2:
            return None
        counts = np.bincount(groups, minlength=len(vocab)).astype(float)
        grid = self.spaced(vocab.min(), vocab.max(), count)
        kind = "quadratic" if len(vocab) >= 3 else "linear"
        rows = RowGroups(last.index.to_numpy(), groups, counts)
        self.interpolations.append(
            CurveInterpolation(rows, self.to_axis(vocab), self.to_axis(grid), kind)
        )
        tokens = float(runs["tokens"].max())
        own = float(runs["d_model"].iloc[0])
        d_model = float(np.asarray(self.width(nnv)).ravel()[0]) if self.paper_widths else own
        return pd.DataFrame(
            {
                "non_vocab_params": nnv,
                "vocab_size": grid,
                "d_model": d_model,
                "characters": tokens / f(grid),
                "flops": flops(nnv, grid, d_model, tokens),
                "kind": "interpolated (V)",
            }
        )

    def loss(self, loss_u: np.ndarray) -> np.ndarray:
        """L_u of every interpolated point, in the order of `points`."""
        values = [part.loss(loss_u) for part in self.interpolations]
        return np.concatenate(values) if values else np.empty(0)


def envelope_indices(flops_values: np.ndarray, loss: np.ndarray) -> np.ndarray:
    """Walk the points by increasing C (ties by L_u); keep a point whose L_u is below all kept
    before it."""
    order = np.lexsort((loss, flops_values))
    ordered = loss[order]
    previous_best = np.concatenate([[np.inf], np.minimum.accumulate(ordered)[:-1]])
    return order[ordered < previous_best]


def lower_envelope(points: pd.DataFrame) -> pd.DataFrame:
    """The envelope rows of a table of points with `flops` and `loss_u`, by increasing C."""
    keep = envelope_indices(points["flops"].to_numpy(float), points["loss_u"].to_numpy(float))
    return points.iloc[keep].reset_index(drop=True)


def fit_power_law(
    log_c: np.ndarray,
    log_y: np.ndarray,
    exponent: float | None,
    delta: float,
    start: tuple[float, float] | None = None,
):
    """ln y = K + e ln C by Huber regression: with e free, `huber_linear_regression` started
    from `start` (K, e) or least squares; with e fixed (`exponent`), K is the Huber location of
    ln y - e ln C, a convex problem in one variable (bounded Brent). Returns K, e and the fit's
    objective, R^2, point count and whether it converged."""
    if exponent is not None:
        offsets = log_y - exponent * log_c
        result = minimize_scalar(
            lambda k: huber_objective(offsets - k, delta),
            bounds=(offsets.min() - 1.0, offsets.max() + 1.0),
            method="bounded",
            options={"xatol": 1e-12},
        )
        return _power_law(log_c, log_y, result.x, exponent, result.fun, bool(result.success))
    centre = float(log_c.mean())  # ln y = (K + e centre) + e (ln C - centre): well conditioned
    design = np.column_stack([np.ones_like(log_c), log_c - centre])
    initial = None if start is None else np.array([start[0] + start[1] * centre, start[1]])
    coefficients, converged = huber_linear_regression(design, log_y, delta, initial)
    slope = float(coefficients[1])
    intercept = float(coefficients[0]) - slope * centre
    objective = huber_objective(log_y - intercept - slope * log_c, delta)
    return _power_law(log_c, log_y, intercept, slope, objective, converged)


def fit_power_law_authors(
    log_c: np.ndarray, log_y: np.ndarray, exponent: float | None, delta: float
):
    """The authors' fit of ln y = K + e ln C: L-BFGS-B with scipy's defaults on the summed
    Huber loss (scipy.special.huber: where L-BFGS-B stops depends on the objective's last
    bits) of the log residuals from every start (K in linspace(-20, 15, 20), times e in
    linspace(0, 1, 20) when e is free), keeping the result with the smallest relative MSE,
    mean((ln y - prediction)^2) / mean(ln y)^2."""

    def predict(p):
        return p[0] + (p[1] if exponent is None else exponent) * log_c

    if exponent is None:
        starts = [(k, e) for k in AUTHORS_INTERCEPT_STARTS for e in AUTHORS_EXPONENT_STARTS]
    else:
        starts = [(k,) for k in AUTHORS_INTERCEPT_STARTS]
    best = None
    for start in starts:
        result = minimize(
            lambda p: np.sum(huber(delta, log_y - predict(p))), start, method="L-BFGS-B"
        )
        relative_mse = np.mean((log_y - predict(result.x)) ** 2) / np.mean(log_y) ** 2
        if best is None or relative_mse < best[0]:
            best = (relative_mse, result)
    result = best[1]
    slope = result.x[1] if exponent is None else exponent
    objective = huber_objective(log_y - predict(result.x), delta)
    return _power_law(log_c, log_y, result.x[0], slope, objective, bool(result.success))


def _power_law(log_c, log_y, intercept, slope, objective, converged):
    quality = {
        "objective": float(objective),
        "r_squared": r_squared(log_y, intercept + slope * log_c),
        "points": len(log_y),
        "converged": converged,
    }
    return float(intercept), float(slope), quality


def edge_shares(envelope: pd.DataFrame, frame: pd.DataFrame) -> dict[str, float]:
    """Share of envelope points at the smallest or largest trained Nnv and V: there the true
    optimum may lie beyond the grid, and the fitted laws are pulled towards the grid."""
    shares = {}
    for column in ("non_vocab_params", "vocab_size"):
        low, high = frame[column].min(), frame[column].max()
        values = envelope[column].to_numpy(float)
        at_edge = np.isclose(values, low, rtol=1e-9) | np.isclose(values, high, rtol=1e-9)
        shares[column] = float(at_edge.mean())
    return shares


class IsoflopsFitter:
    """Approach 1 prepared on a table's design; calling it with any L_u (row for row) fits."""

    def __init__(
        self,
        runs: RunsTable,
        f: TokensPerChar,
        *,
        method: str,
        densify: bool,
        free_exponents: bool,
        huber_delta: float,
        nnv_points: int,
        vocab_points: int,
    ):
        self.runs, self.method = runs, method_named(method)
        self.options = {
            "method": method,
            "densify": densify,
            "free_exponents": free_exponents,
            "huber_delta": huber_delta,
            "nnv_points": nnv_points,
            "vocab_points": vocab_points,
        }
        observed = runs.frame[POINT_COLUMNS].astype(float).assign(kind="observed")
        self.densifier = None
        if densify:
            in_logs = self.method.log_densification
            width = learnt_widths(runs) if in_logs else width_for_nnv_array
            self.densifier = Densifier(runs.frame, f, nnv_points, vocab_points, in_logs, width)
        parts = [observed]
        if self.densifier is not None and self.densifier.points is not None:
            parts.append(self.densifier.points)
        self.points = pd.concat(parts, ignore_index=True)
        self.flops = self.points["flops"].to_numpy(float)

    def point_losses(self, loss_u: np.ndarray) -> np.ndarray:
        if self.densifier is None:
            return loss_u
        return np.concatenate([loss_u, self.densifier.loss(loss_u)])

    def envelope(self, loss_u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The envelope's points (indices into `points`, by increasing C) and every point's
        L_u; an error when the envelope has too few compute levels for the power laws."""
        loss = self.point_losses(loss_u)
        keep = envelope_indices(self.flops, np.where(np.isfinite(loss), loss, np.inf))
        keep = keep[np.isfinite(loss[keep])]
        free = self.options["free_exponents"]
        if len(np.unique(self.flops[keep])) < (3 if free else 2):
            raise RunsTableError(
                f"{self.runs.source}: the IsoFLOPs envelope has {len(np.unique(self.flops[keep]))}"
                f" distinct compute level(s); at least {3 if free else 2} are needed (train more "
                "checkpoints, models or vocabularies)"
            )
        return keep, loss

    def power_law(
        self, keep: np.ndarray, values: np.ndarray, exponent: float | None, start=None
    ) -> tuple[float, float, dict[str, Any]]:
        """ln y = K + e ln C on the envelope points `keep` by the method's fit (the Huber
        minimum from `start`, (K, e) or None, or the authors' L-BFGS-B from their grid)."""
        log_c, delta = np.log(self.flops[keep]), self.options["huber_delta"]
        if not self.method.huber_minimum:
            return fit_power_law_authors(log_c, np.log(values), exponent, delta)
        return fit_power_law(log_c, np.log(values), exponent, delta, start)

    def nnv_law(self, loss_u: np.ndarray, start: tuple[float, float] | None = None):
        """K1 and the Nnv exponent alone, Nnv = e^K1 C^a: the compute-optimal budget of a model,
        which approach 2 reads its anchor at (a third of a full fit's work)."""
        keep, _ = self.envelope(loss_u)
        fixed = None if self.options["free_exponents"] else 0.5
        nnv = self.points["non_vocab_params"].to_numpy(float)[keep]
        k1, a, quality = self.power_law(keep, nnv, fixed, start)
        return k1, a, quality

    def __call__(
        self, loss_u: np.ndarray, f: TokensPerChar, warm: Fit | None, full: bool = False
    ) -> Fit:
        """Fit on L_u (`f` is not needed: the design is fixed), the Huber power laws started
        from `warm`'s when given; `full` adds the envelope and logs what it saw."""
        keep, loss = self.envelope(loss_u)
        envelope = self.points.iloc[keep]
        nv = (envelope["vocab_size"] * envelope["d_model"]).to_numpy(float)
        if len(np.unique(nv)) < 2:
            raise RunsTableError(
                f"{self.runs.source}: every point of the IsoFLOPs envelope has the same Nv = "
                f"{nv[0]:.4g} ({self.runs.frame['run'].nunique()} run(s)); the Nv law needs runs "
                "with several vocabulary sizes or models"
            )
        fixed = None if self.options["free_exponents"] else 0.5

        def fit(values: np.ndarray, exponent: float | None, start_keys: tuple[str, str]):
            start = None if warm is None else tuple(warm.coefficients[k] for k in start_keys)
            return self.power_law(keep, values, exponent, start)

        nnv = envelope["non_vocab_params"].to_numpy(float)
        k1, a, q1 = fit(nnv, fixed, ("K1", "nnv_exponent"))
        k2, gamma, q2 = fit(nv, None, ("K2", "gamma"))
        chars = envelope["characters"].to_numpy(float)
        k3, b, q3 = fit(chars, fixed, ("K3", "characters_exponent"))
        quality = {"nnv": q1, "vocab_params": q2, "characters": q3}
        coefficients = {
            "K1": k1,
            "K2": k2,
            "K3": k3,
            "gamma": gamma,
            "nnv_exponent": a,
            "characters_exponent": b,
        }
        flags = [
            f"{name} fit did not converge" for name, q in quality.items() if not q["converged"]
        ]
        details = {}
        if full:
            details = self._describe(envelope.assign(loss_u=loss[keep], vocab_params=nv), quality)
        return Fit(coefficients, flags, details)

    def _describe(self, envelope: pd.DataFrame, quality: dict[str, Any]) -> dict[str, Any]:
        edges = edge_shares(envelope, self.runs.frame)
        log.info(
            "isoflops (%s): %d points, %d on the envelope",
            self.method.name,
            len(self.points),
            len(envelope),
        )
        for column, share in edges.items():
            if share > 0.5:
                log.warning(
                    "isoflops: %.0f%% of the envelope lies at the smallest or largest trained %s; "
                    "the optimum may lie outside the grid and the fitted laws lean towards it",
                    100 * share,
                    "Nnv" if column == "non_vocab_params" else "V",
                )
        for name, fit in quality.items():
            if not fit["converged"]:
                log.warning("isoflops: the %s power law did not converge", name)
        return {
            "options": dict(self.options),
            "fit": {**quality, "envelope_at_grid_edge": edges},
            "points": len(self.points),
            "envelope": envelope.reset_index(drop=True).to_dict(orient="records"),
            "flops_range": [float(envelope["flops"].min()), float(envelope["flops"].max())],
        }


def learnt_widths(runs: RunsTable):
    """d of any Nnv learnt from the trained models, learnt when first asked (a table of one
    model size has no interpolated Nnv to ask about)."""

    def width(nnv):
        return width_from_runs(runs.frame, runs.source)(nnv)

    return width


def width_for_nnv_array(nnv) -> np.ndarray:
    """The paper's width mapping over an array of Nnv."""
    return np.array([width_for_nnv(float(n)) for n in np.atleast_1d(nnv)], dtype=float)


def isoflops_points(
    runs: RunsTable,
    f: TokensPerChar,
    densify: bool,
    nnv_points: int,
    vocab_points: int,
    method: str = "corrected",
) -> pd.DataFrame:
    """Every (run, checkpoint), plus the interpolated points when `densify`, with their L_u."""
    fitter = IsoflopsFitter(
        runs, f, method=method, densify=densify, free_exponents=False, huber_delta=1e-3,
        nnv_points=nnv_points, vocab_points=vocab_points,
    )  # fmt: skip
    loss = fitter.point_losses(runs.frame["loss_u"].to_numpy(float))
    points = fitter.points.assign(loss_u=loss)
    return points[np.isfinite(loss)].reset_index(drop=True)


def estimate_isoflops(runs: RunsTable, f: TokensPerChar, **options) -> Fit:
    """Approach 1 on the runs, with the options of `estimate.isoflops` and the method."""
    fitter = IsoflopsFitter(runs, f, **options)
    return fitter(runs.frame["loss_u"].to_numpy(float), f, None, full=True)


def optimal_flops(coefficients: dict[str, Any], nnv: float) -> float:
    """The compute-optimal budget of a model with `nnv`: C = (Nnv / e^K1)^(1/a)."""
    return float(
        (nnv / np.exp(coefficients["K1"])) ** (1.0 / coefficients.get("nnv_exponent", 0.5))
    )


def predict_vocab_params(coefficients: dict[str, Any], flops_budget: float) -> float:
    return float(np.exp(coefficients["K2"]) * flops_budget ** coefficients["gamma"])


def predict(
    coefficients: dict[str, Any],
    nnv: float,
    d_model: float,
    budget: float | None,
    optimal: float | None,
) -> Answer:
    """V and Nv at this fit's own compute-optimal budget for Nnv (`budget` is not used: the
    power laws answer only on the optimal path)."""
    own_budget = optimal_flops(coefficients, nnv)
    nv = predict_vocab_params(coefficients, own_budget)
    return Answer(nv / d_model, nv, own_budget)
