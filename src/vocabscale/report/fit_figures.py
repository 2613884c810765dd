"""The report's figures of the fits: approach 1's envelope and power laws, approach 3's fit
and its optimal V against the budget, and every approach's Nv against Nnv. Each draws the
data `curves` computed for it into a PNG."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter

from vocabscale.report.curves import (
    BudgetCurves,
    EnvelopeData,
    ParametricFitData,
    PowerLaws,
    VocabCurves,
)
from vocabscale.report.evidence import title
from vocabscale.report.numbers import human
from vocabscale.report.plotting import (
    FLOPS_LABEL,
    colour,
    legend_outside,
    plain_log_ticks,
    save,
    vocab_colours,
    vocab_norm,
)

# --- approach 1 ------------------------------------------------------------------------------


def _draw_envelope_points(fig, ax, envelope: pd.DataFrame, runs: pd.DataFrame | None) -> None:
    """The envelope's points coloured by V (a marker per kind: observed or interpolated), with
    a colour bar whose ticks are the swept V."""
    swept = envelope["vocab_size"]
    if runs is not None:
        swept = pd.concat([swept, runs["vocab_size"]])
    norm = vocab_norm(swept)
    markers = {"observed": "o", "interpolated (Nnv, H)": "s", "interpolated (V)": "^"}
    scatter = None
    for kind, points in envelope.groupby("kind"):
        marker = markers.get(kind, "D")
        scatter = ax.scatter(
            points["flops"],
            points["loss_u"],
            c=points["vocab_size"],
            cmap="viridis",
            norm=norm,
            marker=marker,
            s=26,
            edgecolors="black",
            linewidths=0.4,
            zorder=3,
        )
        ax.scatter(
            [],
            [],
            marker=marker,
            s=26,
            color="white",
            edgecolors="black",
            linewidths=0.6,
            label=f"optimal point, {kind} ({len(points)})",
        )
    if scatter is not None:
        bar = fig.colorbar(scatter, ax=ax, pad=0.01)
        bar.set_label("V of the optimal point  [tokens, log]")
        bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        bar.ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        if runs is not None:
            bar.set_ticks(sorted(runs["vocab_size"].unique()))


def figure_isoflops_envelope(data: EnvelopeData, path: Path) -> None:
    """The lower envelope of L_u against C, and the (interpolated) runs that make it up."""
    envelope, runs = data.envelope, data.runs
    fig, ax = plt.subplots(figsize=(8, 4.8), layout="constrained")
    if runs is not None:
        ax.scatter(
            runs["flops"],
            runs["loss_u"],
            s=8,
            color="lightgrey",
            label="all checkpoints",
            zorder=1,
        )
    ax.step(
        envelope["flops"],
        envelope["loss_u"],
        where="post",
        color="black",
        lw=1,
        label="lower envelope",
        zorder=2,
    )
    _draw_envelope_points(fig, ax, envelope, runs)
    ax.set_xscale("log")
    ax.set_xlabel(FLOPS_LABEL)
    ax.set_ylabel("unigram-normalized loss L_u  [nats/token]")
    ax.set_title(
        "IsoFLOPs: the best point at each compute ("
        + ("densified as the authors did" if data.densified else "plain envelope")
        + ")",
        fontsize=10,
    )
    ax.legend(loc="lower left", fontsize=7.5, framealpha=0.85)
    save(fig, path)


def figure_isoflops_power_laws(data: PowerLaws, path: Path) -> None:
    """Nnv, Nv and H of the envelope points against C, the fitted power laws, their bootstrap
    bands, extended (dashed) to the targets' budgets."""
    grid, (low, high), rows = data.grid, data.fitted_range, data.targets
    count = len(data.panels)
    fig, axes = plt.subplots(1, count, figsize=(4.2 * count, 4.4), layout="constrained")
    for ax, panel in zip(np.atleast_1d(axes), data.panels):
        inside = (grid >= low) & (grid <= high)
        ax.scatter(
            data.envelope["flops"],
            data.envelope[panel.column],
            s=10,
            color="grey",
            alpha=0.7,
            label="envelope",
        )
        ax.plot(
            grid[inside],
            panel.line[inside],
            color="tab:blue",
            lw=2,
            label=f"{panel.symbol} = e^{panel.intercept:.3g} C^{panel.slope:.3g}",
        )
        beyond = grid >= high
        ax.plot(grid[beyond], panel.line[beyond], color="tab:blue", lw=1.2, ls="--", label=None)
        if panel.band is not None:
            ax.fill_between(
                grid,
                panel.band.low,
                panel.band.high,
                color="tab:blue",
                alpha=0.18,
                lw=0,
                label=f"{data.confidence:.0%} bootstrap band ({data.refits} refits)",
            )
        if panel.column in ("vocab_params", "non_vocab_params") and not rows.empty:
            ax.scatter(
                rows["flops"],
                rows["vocab_params" if panel.column == "vocab_params" else "nnv"],
                marker="*",
                s=80,
                color="tab:red",
                zorder=4,
                label="targets",
            )
        ax.axvspan(high, grid[-1], color="khaki", alpha=0.25, lw=0)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("C = 6 (Nnv + V d) D  [FLOPs]")
        ax.set_ylabel(f"{panel.label}  [log]")
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(
        "Approach 1 power laws on the envelope (shaded: beyond the fitted compute, dashed line "
        "= extrapolation)",
        fontsize=10,
    )
    save(fig, path)


# --- approach 3 ------------------------------------------------------------------------------


def figure_parametric_fit(data: ParametricFitData, path: Path) -> None:
    """Approach 3's L_u against the observed L_u of every checkpoint, and the residuals."""
    runs, observed, predicted, used = data.runs, data.observed, data.predicted, data.fitted
    colours = vocab_colours(runs["vocab_size"])
    point_colours = [colours[float(v)] for v in runs["vocab_size"]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.6), layout="constrained")
    for ax, x, y in ((left, observed, predicted), (right, runs["flops"], observed - predicted)):
        ax.scatter(
            np.asarray(x)[used],
            np.asarray(y)[used],
            s=14,
            c=[c for c, u in zip(point_colours, used) if u],
        )
        if (~used).any():
            ax.scatter(
                np.asarray(x)[~used],
                np.asarray(y)[~used],
                s=14,
                facecolors="none",
                edgecolors=[c for c, u in zip(point_colours, used) if not u],
                label=f"C < {data.min_flops:.3g}: not fitted",
            )
    span = [min(observed.min(), predicted.min()), max(observed.max(), predicted.max())]
    left.plot(span, span, color="black", lw=0.8, ls="--", label="predicted = observed")
    left.set_xlabel("observed L_u  [nats/token]")
    left.set_ylabel("approach 3 L_u  [nats/token]")
    quality = data.quality
    left.set_title(
        f"Predicted against observed (R² = {quality.get('r_squared', float('nan')):.4f}, "
        f"{quality.get('points', used.sum())} points fitted)",
        fontsize=10,
    )
    left.legend(fontsize=7.5, loc="upper left")
    right.axhline(0, color="black", lw=0.8)
    rmse = quality.get("rmse")
    if rmse:
        right.axhspan(-rmse, rmse, color="grey", alpha=0.15, lw=0, label=f"± RMSE {rmse:.3g}")
    for vocab_size, colour_of_v in colours.items():
        right.scatter([], [], s=14, color=colour_of_v, label=f"V = {vocab_size:,.0f}")
    right.set_xscale("log")
    right.set_xlabel(FLOPS_LABEL)
    right.set_ylabel("residual: observed − predicted L_u  [nats/token]")
    right.set_title("Residuals against compute (structure here = a misfit law)", fontsize=10)
    legend_outside(right)
    if data.authors_tokenization:
        fig.suptitle(
            "Compatibility switch on: D in this fit is H f(V/1000), as in the authors' code",
            fontsize=9,
            color="tab:red",
        )
    save(fig, path)


def figure_budget_multiple(data: BudgetCurves, path: Path) -> None:
    """Approach 3's optimal V for each target when it is under- or over-trained."""
    multiples = data.multiples
    fig, ax = plt.subplots(figsize=(8, 4.8), layout="constrained")
    cmap = plt.get_cmap("plasma")
    for curve in data.curves:
        shade = cmap(0.85 * curve.index / max(1, data.targets - 1))
        ax.plot(multiples, curve.values, color=shade, lw=1.8, label=f"{curve.name}")
        if curve.own is not None:
            ax.scatter([curve.own[0]], [curve.own[1]], color=shade, s=40, zorder=4)
        if curve.at_edge.any():
            at_edge = curve.at_edge
            ax.scatter(
                multiples[at_edge], curve.values[at_edge], facecolors="none", edgecolors=shade, s=30
            )
    if any(curve.at_edge.any() for curve in data.curves):
        ax.scatter(
            [], [], facecolors="none", edgecolors="black", s=30, label="at the V search bound"
        )
    if any(curve.own is not None for curve in data.curves):
        ax.scatter([], [], color="black", s=40, label="the target's own budget")
    values = np.concatenate([curve.values for curve in data.curves])
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    if high < 2 * low:  # a flat answer: keep the axis readable instead of zooming into noise
        ax.set_ylim(low / 2, high * 2)
    ax.axvline(1.0, color="grey", lw=0.8, ls="--")
    ax.annotate(
        " compute-optimal (1x)" if data.compute_optimal else " the target's budget (1x)",
        (1.0, 0.02),
        xycoords=("data", "axes fraction"),
        fontsize=7,
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    plain_log_ticks(ax.yaxis, minor_labels=high < 100 * low)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.set_xlabel(
        "budget / compute-optimal budget  (< 1x under-trained, > 1x over-trained)"
        if data.compute_optimal
        else "budget / the target's `flops` (no approach 1: the compute-optimal budget is unknown)"
    )
    ax.set_ylabel("approach 3 optimal V  [tokens, log]")
    heading = "Optimal vocabulary against the training budget (approach 3)"
    if all(curve.at_edge.all() for curve in data.curves):
        heading += "\nevery answer is at the edge of the V search: the fit has no interior optimum"
    ax.set_title(heading, fontsize=10)
    legend_outside(ax, title="target")
    save(fig, path)


# --- all approaches --------------------------------------------------------------------------


def _spread_labels(ax, points: list[tuple[float, float, str]], gap: float = 0.17) -> None:
    """Label scattered points on log-log axes without overlap: labels that would collide
    (x within a decade, y within `gap` decades) are pushed apart vertically, with a leader."""
    placed: list[tuple[float, float]] = []
    for x, y, text in sorted(points, key=lambda p: p[1]):
        lx, ly = np.log10(x), np.log10(y)
        label_y = ly
        for px, py in placed:
            if abs(px - lx) < 1.0 and label_y - py < gap:
                label_y = py + gap
        placed.append((lx, label_y))
        ax.annotate(
            text,
            (x, y),
            xytext=(x * 1.6, 10**label_y),
            textcoords="data",
            fontsize=6.5,
            va="center",
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.75},
            arrowprops={"arrowstyle": "-", "color": "grey", "lw": 0.5, "shrinkB": 4},
        )


def _draw_public_models(ax, models: list[dict], nnv_range: tuple[float, float]) -> None:
    """The public models as stars labelled with their V, and room on the right for labels."""
    nv = [m["vocab_size"] * m["d_model"] for m in models]
    ax.scatter(
        [m["nnv"] for m in models],
        nv,
        marker="*",
        s=90,
        color="tab:red",
        edgecolors="black",
        linewidths=0.4,
        zorder=5,
        label="public models (V d)",
    )
    _spread_labels(
        ax,
        [
            (m["nnv"], value, f"{m['name']} ({human(m['vocab_size'])})")
            for m, value in zip(models, nv)
        ],
    )
    ax.set_xlim(nnv_range[0] / 3, nnv_range[1] * 30)


def figure_vocab_vs_nnv(data: VocabCurves, path: Path) -> None:
    """Nv against Nnv: each approach's curve (and the published one), the sweep, the targets
    and the vocabularies of well-known public models."""
    fig, ax = plt.subplots(figsize=(9.5, 5.6), layout="constrained")
    ax.set_xscale("log")
    ax.set_yscale("log")
    for approach, (fitted, published) in data.curves.items():
        if np.isfinite(fitted).any():  # approach 3 needs approach 1's budget
            label = f"{title(approach)} (fitted)"
            ax.plot(data.grid, fitted, color=colour(approach), lw=2, label=label)
        ax.plot(
            data.grid,
            published,
            color=colour(approach),
            lw=1,
            ls="--",
            alpha=0.7,
            label=f"{title(approach)} (published)",
        )
    if data.sweep is not None:
        ax.scatter(
            data.sweep.index.get_level_values(0),
            data.sweep.to_numpy(),
            s=12,
            color="grey",
            marker="s",
            label="trained runs (the sweep)",
        )
    ax.scatter(
        data.targets["nnv"],
        data.targets["vocab_params"],
        s=28,
        c=[colour(a) for a in data.targets["approach"]],
        edgecolors="black",
        linewidths=0.5,
        zorder=4,
        label="targets' predictions",
    )
    if data.public_models:
        _draw_public_models(ax, data.public_models, data.nnv_range)
    ax.set_xlabel("non-vocabulary parameters Nnv  [log]")
    ax.set_ylabel("vocabulary parameters Nv = V d  [log]")
    heading = "Compute-optimal Nv against Nnv"
    if data.compute_optimal:
        heading += ", at approach 1's optimal budget"
    ax.set_title(heading, fontsize=10)
    legend_outside(ax)
    save(fig, path)
