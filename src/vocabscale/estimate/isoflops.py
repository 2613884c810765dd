"""Approach 1 (IsoFLOPs): the lower envelope of L_u against compute, and power laws of the
optimal Nnv, Nv and H in C along it (docs/design.md, "Approach 1").

Points are every (run, checkpoint). By default they are densified as the authors did: per V, a
cubic interpolation of L_u over the (Nnv, H) plane at log-spaced pairs; per model, a quadratic
interpolation of the last checkpoint's L_u over V. Interpolation happens in log coordinates
(log Nnv, log H, log V), where the points are spread evenly. Along increasing C a point joins
the envelope when its L_u is below every point kept before it. On the envelope, with a Huber
loss on log residuals: Nnv = e^K1 C^a, Nv = e^K2 C^gamma, H = e^K3 C^b (a = b = 0.5 fixed, or
free).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from scipy.interpolate import griddata, interp1d

from vocabscale.accounting import flops, log_spaced
from vocabscale.estimate.fitting import huber_least_squares, r_squared
from vocabscale.runs.table import RunsTable, RunsTableError, width_from_runs
from vocabscale.tokens_per_char import TokensPerChar

log = logging.getLogger(__name__)

#: The fitted coefficients (all a prediction needs).
COEFFICIENTS = ("K1", "K2", "K3", "gamma", "nnv_exponent", "characters_exponent")
POINT_COLUMNS = ["non_vocab_params", "vocab_size", "d_model", "characters", "flops", "loss_u"]


def densify_over_nnv_and_h(
    frame: pd.DataFrame, f: TokensPerChar, count: int
) -> pd.DataFrame | None:
    """Per V, L_u interpolated (cubic, scattered) at `count` log-spaced (Nnv, H) pairs; d of an
    interpolated Nnv is interpolated between the trained models. Repeated (Nnv, H) points (a
    bootstrap resample draws a run more than once) are averaged first. None when no V has
    runs of two model sizes to interpolate between."""
    nnv_grid = log_spaced(frame["non_vocab_params"].min(), frame["non_vocab_params"].max(), count)
    h_grid = log_spaced(frame["characters"].min(), frame["characters"].max(), count)
    if frame["non_vocab_params"].nunique() < 2:
        return None
    width = width_from_runs(frame)
    parts = []
    for vocab_size, points in frame.groupby("vocab_size"):
        points = points.groupby(["non_vocab_params", "characters"], as_index=False)["loss_u"].mean()
        if points["non_vocab_params"].nunique() < 2 or len(points) < 4:
            continue
        xy = np.log(points[["non_vocab_params", "characters"]].to_numpy(float))
        try:
            loss_u = griddata(
                xy,
                points["loss_u"].to_numpy(float),
                (np.log(nnv_grid), np.log(h_grid)),
                method="cubic",
            )
        except (ValueError, RuntimeError):  # degenerate (collinear) point sets
            continue
        keep = np.isfinite(loss_u)
        d_model = width(nnv_grid[keep])
        tokens = h_grid[keep] * f(vocab_size)
        parts.append(
            pd.DataFrame(
                {
                    "non_vocab_params": nnv_grid[keep],
                    "vocab_size": float(vocab_size),
                    "d_model": d_model,
                    "characters": h_grid[keep],
                    "flops": flops(nnv_grid[keep], vocab_size, d_model, tokens),
                    "loss_u": loss_u[keep],
                    "kind": "interpolated (Nnv, H)",
                }
            )
        )
    return pd.concat(parts, ignore_index=True) if parts else None


def densify_over_vocab(frame: pd.DataFrame, f: TokensPerChar, count: int) -> pd.DataFrame | None:
    """Per model, the last checkpoint's L_u interpolated (quadratic) over log V at `count`
    log-spaced V, each trained on the model's maximum tokens (H = tokens / f(V)). None when no
    model was trained with two vocabulary sizes."""
    parts = []
    for nnv, runs in frame.groupby("non_vocab_params"):
        last = runs.loc[runs.groupby("run")["tokens"].idxmax()]
        last = last.groupby("vocab_size")["loss_u"].mean().sort_index()
        if len(last) < 2:
            continue
        kind = "quadratic" if len(last) >= 3 else "linear"
        curve = interp1d(np.log(last.index.to_numpy(float)), last.to_numpy(float), kind=kind)
        vocab = log_spaced(last.index.min(), last.index.max(), count)
        tokens = runs["tokens"].max()
        d_model = float(runs["d_model"].iloc[0])
        characters = tokens / f(vocab)
        parts.append(
            pd.DataFrame(
                {
                    "non_vocab_params": float(nnv),
                    "vocab_size": vocab,
                    "d_model": d_model,
                    "characters": characters,
                    "flops": flops(nnv, vocab, d_model, tokens),
                    "loss_u": curve(np.log(vocab)),
                    "kind": "interpolated (V)",
                }
            )
        )
    return pd.concat(parts, ignore_index=True) if parts else None


def lower_envelope(points: pd.DataFrame) -> pd.DataFrame:
    """Walk the points by increasing C; keep a point whose L_u is below all kept before it."""
    ordered = points.sort_values(["flops", "loss_u"], kind="mergesort")
    best = np.minimum.accumulate(ordered["loss_u"].to_numpy())
    previous_best = np.concatenate([[np.inf], best[:-1]])
    return ordered[ordered["loss_u"].to_numpy() < previous_best].reset_index(drop=True)


def fit_power_law(log_c: np.ndarray, log_y: np.ndarray, exponent: float | None, delta: float):
    """ln y = K + e ln C by Huber regression, started from least squares; e fixed when
    `exponent` is given. Returns K, e and the fit's objective, R^2 and point count."""
    if exponent is None:
        slope, intercept = np.polyfit(log_c, log_y, 1)
        fit = huber_least_squares(
            lambda p: p[0] + p[1] * log_c - log_y, [[intercept, slope]], delta, ["K", "e"]
        )
        intercept, slope = fit.params
    else:
        fit = huber_least_squares(
            lambda p: p[0] + exponent * log_c - log_y,
            [[float(np.median(log_y - exponent * log_c))]],
            delta,
            ["K"],
        )
        intercept, slope = fit.params[0], exponent
    prediction = intercept + slope * log_c
    quality = {
        "objective": fit.objective,
        "r_squared": r_squared(log_y, prediction),
        "points": len(log_y),
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


def isoflops_points(
    runs: RunsTable, f: TokensPerChar, densify: bool, nnv_points: int, vocab_points: int
) -> pd.DataFrame:
    """Every (run, checkpoint), plus the interpolated points when `densify`."""
    observed = runs.frame[POINT_COLUMNS].astype(float).assign(kind="observed")
    if not densify:
        return observed
    interpolated = [
        densify_over_nnv_and_h(runs.frame, f, nnv_points),
        densify_over_vocab(runs.frame, f, vocab_points),
    ]
    return pd.concat([observed, *(p for p in interpolated if p is not None)], ignore_index=True)


def estimate_isoflops(
    runs: RunsTable,
    f: TokensPerChar,
    *,
    densify: bool,
    free_exponents: bool,
    huber_delta: float,
    nnv_points: int,
    vocab_points: int,
) -> dict[str, Any]:
    """Approach 1 on the runs, with the options of `estimate.isoflops`."""
    points = isoflops_points(runs, f, densify, nnv_points, vocab_points)
    envelope = lower_envelope(points)
    needed = 3 if free_exponents else 2
    if envelope["flops"].nunique() < needed:
        raise RunsTableError(
            f"{runs.source}: the IsoFLOPs envelope has {envelope['flops'].nunique()} distinct "
            f"compute level(s); at least {needed} are needed (train more checkpoints, models or "
            "vocabularies)"
        )
    nv = envelope["vocab_size"] * envelope["d_model"]
    if nv.nunique() < 2:
        raise RunsTableError(
            f"{runs.source}: every point of the IsoFLOPs envelope has the same Nv = "
            f"{nv.iloc[0]:.4g} ({runs.frame['run'].nunique()} run(s)); the Nv law needs runs "
            "with several vocabulary sizes or models"
        )
    log_c = np.log(envelope["flops"].to_numpy(float))
    fixed = None if free_exponents else 0.5
    k1, a, q1 = fit_power_law(
        log_c, np.log(envelope["non_vocab_params"].to_numpy(float)), fixed, huber_delta
    )
    k2, gamma, q2 = fit_power_law(log_c, np.log(nv.to_numpy(float)), None, huber_delta)
    k3, b, q3 = fit_power_law(
        log_c, np.log(envelope["characters"].to_numpy(float)), fixed, huber_delta
    )
    edges = edge_shares(envelope, runs.frame)
    log.info(
        "isoflops: %d points, %d on the envelope; gamma = %.4f", len(points), len(envelope), gamma
    )
    for column, share in edges.items():
        if share > 0.5:
            log.warning(
                "isoflops: %.0f%% of the envelope lies at the smallest or largest trained %s; "
                "the optimum may lie outside the grid and the fitted laws lean towards it",
                100 * share,
                "Nnv" if column == "non_vocab_params" else "V",
            )
    return {
        "K1": k1,
        "K2": k2,
        "K3": k3,
        "gamma": gamma,
        "nnv_exponent": a,
        "characters_exponent": b,
        "options": {
            "densify": densify,
            "free_exponents": free_exponents,
            "huber_delta": huber_delta,
            "nnv_points": nnv_points,
            "vocab_points": vocab_points,
        },
        "fit": {"nnv": q1, "vocab_params": q2, "characters": q3, "envelope_at_grid_edge": edges},
        "points": len(points),
        "envelope": envelope.assign(vocab_params=nv).to_dict(orient="records"),
        "flops_range": [float(envelope["flops"].min()), float(envelope["flops"].max())],
    }


def optimal_flops(coefficients: dict[str, Any], nnv: float) -> float:
    """The compute-optimal budget of a model with `nnv`: C = (Nnv / e^K1)^(1/a)."""
    return float(
        (nnv / np.exp(coefficients["K1"])) ** (1.0 / coefficients.get("nnv_exponent", 0.5))
    )


def predict_vocab_params(coefficients: dict[str, Any], flops_budget: float) -> float:
    return float(np.exp(coefficients["K2"]) * flops_budget ** coefficients["gamma"])


def predict(
    fitted: dict[str, Any], nnv: float, d_model: float, budget: float | None, optimal: float | None
) -> dict[str, float]:
    """V and Nv at this fit's own compute-optimal budget for Nnv (`budget` is not used: the
    power laws answer only on the optimal path)."""
    own_budget = optimal_flops(fitted, nnv)
    nv = predict_vocab_params(fitted, own_budget)
    return {"vocab_size": nv / d_model, "vocab_params": nv, "flops": own_budget}
