"""The report's figures: each draws one piece of evidence behind the predictions.

A figure function takes the `Evidence` the report gathered and a PNG path, and raises
`Skipped` (with a sentence the report prints in the figure's place) when the data it needs is
absent, so a report rebuilt from a bare coefficients file still builds. `FIGURES` lists them
in report order with their titles and captions.

Every compute axis uses the paper's convention C = 6 (Nnv + V d) D (attention FLOPs left out).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from matplotlib.ticker import FuncFormatter

from vocabscale.accounting import log_spaced, width_for_nnv
from vocabscale.estimate import parametric
from vocabscale.estimate.approaches import APPROACHES
from vocabscale.estimate.bootstrap import bootstrap_bounds
from vocabscale.estimate.isoflops import optimal_flops
from vocabscale.estimate.predict import predict_one
from vocabscale.estimate.published import PAPER_COEFFICIENTS
from vocabscale.report.evidence import (
    TRUE_TOKENS,
    Evidence,
    Skipped,
    downstream_metric,
    downstream_predictions,
    isoflops_envelope,
    title,
)
from vocabscale.report.numbers import human
from vocabscale.tokens_per_char import (
    PAPER_TOKENS_PER_CHAR,
    TOKENS_PER_CHAR_MAX_VOCAB,
    TokensPerChar,
)

FLOPS_LABEL = "training compute C = 6 (Nnv + V d) D  [FLOPs]"
DPI = 130


def colour(name: str) -> str:
    """One colour per approach, in registry order (the true-token variant of approach 3 in
    olive beside its green)."""
    if name == TRUE_TOKENS:
        return "tab:olive"
    return f"C{list(APPROACHES).index(name)}"


def vocab_colours(vocab_sizes) -> dict[float, Any]:
    """One colour per vocabulary size of the sweep, the same in every figure."""
    values = sorted({float(v) for v in vocab_sizes})
    cmap = plt.get_cmap("viridis")
    positions = np.linspace(0.0, 0.92, len(values)) if len(values) > 1 else [0.4]
    return {v: cmap(p) for v, p in zip(values, positions)}


def model_markers(nnv_values) -> dict[float, str]:
    """One marker per model shape (by Nnv), so runs of one size can be told apart."""
    shapes = "os^Dv<>pPXh*"
    values = sorted({float(n) for n in nnv_values})
    return {n: shapes[i % len(shapes)] for i, n in enumerate(values)}


def _vocab_norm(values) -> LogNorm:
    values = np.asarray(values, float)
    low, high = float(values.min()), float(values.max())
    return LogNorm(low, high if high > low else low * 1.01)


def _legend_outside(ax, **kwargs) -> None:
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False, **kwargs)


def _legend_below(ax, ncol: int = 2) -> None:
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=8, frameon=False, ncol=ncol)


def _plain_log_ticks(axis, minor_labels: bool = True) -> None:
    """Plain numbers on a log axis (2,560, not 2.56 x 10^3); minor ticks labelled at 2 and 5
    only, so that labels never run into each other."""
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
    axis.set_minor_formatter(
        FuncFormatter(lambda v, _: f"{v:,.0f}" if minor_labels and f"{v:.0e}"[0] in "25" else "")
    )


def _save(fig, path: Path) -> None:
    fig.savefig(path, dpi=DPI, bbox_inches="tight")  # legends outside the axes stay whole
    plt.close(fig)


# --- the data --------------------------------------------------------------------------------


def figure_tokens_per_char(evidence: Evidence, path: Path) -> None:
    """f(V): the fitted curve over the tokenizers' measured tokens per character."""
    f = evidence.tokens_per_char
    points = evidence.tokenization_points
    if f is None and points is None:
        raise Skipped("needs f(V) coefficients or measured tokens per character")
    fig, ax = plt.subplots(figsize=(7.5, 5.2), layout="constrained")
    measured_low, measured_high = (None, None)
    if points is not None and not points.empty:
        measured_low, measured_high = points["vocab_size"].min(), points["vocab_size"].max()
        ax.scatter(
            points["vocab_size"],
            points["tokens_per_character"],
            s=36,
            c="black",
            zorder=3,
            label=f"measured ({evidence.tokenization_points_source})",
        )
    predicted = evidence.predictions["vocab_size"].to_numpy(float)
    predicted = predicted[np.isfinite(predicted)]
    low = (measured_low or float(np.min(predicted, initial=4096))) / 1.5
    high = max(measured_high or 0.0, float(np.max(predicted, initial=0.0))) * 1.2
    if high <= low * 2:
        high = low * 10
    if f is not None:
        source = (evidence.coefficients.get("tokenization") or {}).get("source", "")
        inside_low = measured_low or low
        inside_high = measured_high or high
        grid = log_spaced(inside_low, inside_high, 200)
        ax.plot(
            grid,
            f(grid),
            color="tab:red",
            lw=2,
            label=f"f(V) the estimators used = {f.a:.4g} ln²V {f.b:+.4g} ln V {f.c:+.4g}"
            + (f"  [{source}]" if source else ""),
        )
        if high > inside_high * 1.01:
            beyond = log_spaced(inside_high, high, 200)
            ax.plot(beyond, f(beyond), color="tab:red", lw=1.5, ls="--", label="f(V) extrapolated")
        if low < inside_low * 0.99:
            below = log_spaced(low, inside_low, 50)
            ax.plot(below, f(below), color="tab:red", lw=1.5, ls="--")
    grid = log_spaced(low, high, 300)
    ax.plot(
        grid,
        PAPER_TOKENS_PER_CHAR(grid),
        color="grey",
        lw=1,
        ls=":",
        label="paper's fit on SlimPajama (reference)",
    )
    if high > TOKENS_PER_CHAR_MAX_VOCAB:
        ax.axvline(TOKENS_PER_CHAR_MAX_VOCAB, color="grey", lw=0.8, ls="-.")
        ax.annotate(
            " V clamped at 200K",
            (TOKENS_PER_CHAR_MAX_VOCAB, 0.98),
            xycoords=("data", "axes fraction"),
            fontsize=7,
            va="top",
        )
    if points is None or points.empty:
        ax.annotate(
            "no measured points: give the report --tokenization FIT.json or a runs table "
            "with tokens and characters",
            (0.02, 0.02),
            xycoords="axes fraction",
            fontsize=7.5,
            color="dimgrey",
        )
    ax.set_xscale("log")
    _plain_log_ticks(ax.xaxis)
    ax.set_xlabel("vocabulary size V  [tokens, log scale]")
    ax.set_ylabel("f(V)  [tokens per character]")
    ax.set_title("Tokens per character: f(V) = a ln²V + b ln V + c", fontsize=10)
    _legend_below(ax)
    _save(fig, path)


def figure_loss_vs_compute(evidence: Evidence, path: Path) -> None:
    """Every run's checkpoints, L_u against C, coloured by V; diverged rows marked."""
    runs = evidence.need_runs()
    colours = vocab_colours(runs["vocab_size"])
    markers = model_markers(runs["non_vocab_params"])
    fig, ax = plt.subplots(figsize=(8, 4.8), layout="constrained")
    for _, points in runs.groupby("run", sort=False):
        points = points.sort_values("flops")
        ax.plot(
            points["flops"],
            points["loss_u"],
            "-",
            marker=markers[float(points["non_vocab_params"].iloc[0])],
            color=colours[float(points["vocab_size"].iloc[0])],
            ms=3,
            lw=1,
            alpha=0.85,
        )
    for vocab_size, colour in colours.items():
        ax.plot([], [], "-", color=colour, lw=2, label=f"V = {vocab_size:,.0f}")
    for nnv, marker in markers.items():
        ax.plot([], [], marker, color="grey", ls="none", ms=4, label=f"Nnv = {human(nnv)}")
    diverged = evidence.diverged
    if diverged is not None and not diverged.empty:
        shown = diverged[np.isfinite(diverged["loss_u"]) & np.isfinite(diverged["flops"])]
        ax.scatter(
            shown["flops"],
            shown["loss_u"],
            marker="x",
            color="red",
            s=30,
            zorder=4,
            label=f"excluded as diverged ({len(diverged)} rows)",
        )
    ax.axhline(0, color="grey", lw=0.6, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel(FLOPS_LABEL)
    ax.set_ylabel("unigram-normalized loss L_u  [nats/token]")
    ax.set_title(
        f"All {runs['run'].nunique()} runs, {len(runs)} checkpoints (one line per run; "
        "lower is better)",
        fontsize=10,
    )
    _legend_outside(ax)
    _save(fig, path)


# --- approach 1 ------------------------------------------------------------------------------


def figure_isoflops_envelope(evidence: Evidence, path: Path) -> None:
    """The lower envelope of L_u against C, and the (interpolated) runs that make it up."""
    envelope = isoflops_envelope(evidence)
    fig, ax = plt.subplots(figsize=(8, 4.8), layout="constrained")
    if evidence.runs is not None:
        ax.scatter(
            evidence.runs["flops"],
            evidence.runs["loss_u"],
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
    swept = envelope["vocab_size"]
    if evidence.runs is not None:
        swept = pd.concat([swept, evidence.runs["vocab_size"]])
    norm = _vocab_norm(swept)
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
        if evidence.runs is not None:
            bar.set_ticks(sorted(evidence.runs["vocab_size"].unique()))
    ax.set_xscale("log")
    ax.set_xlabel(FLOPS_LABEL)
    ax.set_ylabel("unigram-normalized loss L_u  [nats/token]")
    options = evidence.fitted("isoflops").get("options", {})
    ax.set_title(
        "IsoFLOPs: the best point at each compute ("
        + ("densified as the authors did" if options.get("densify") else "plain envelope")
        + ")",
        fontsize=10,
    )
    ax.legend(loc="lower left", fontsize=7.5, framealpha=0.85)
    _save(fig, path)


def _replicate_band(fitted: dict, key: str, exponent: str, grid: np.ndarray, level):
    """The band of a power law over the bootstrap refits, as the intervals of the report
    (`bootstrap_bounds`): refits that ended on a bound are left out."""

    def line(coefficients: dict) -> np.ndarray | None:
        intercept, slope = coefficients.get(key), coefficients.get(exponent, 0.5)
        if intercept is None or slope is None:
            return None
        with np.errstate(over="ignore"):
            return np.exp(intercept) * grid**slope

    values = [
        curve
        for replicate in fitted.get("bootstrap") or []
        if not replicate.get("flags") and (curve := line(replicate)) is not None
    ]
    if len(values) < 2:
        return None
    reference = fitted.get("bootstrap_reference")
    reference_line = None if reference is None else line(reference)
    return bootstrap_bounds(line(fitted), np.vstack(values), reference_line, level)


def figure_isoflops_power_laws(evidence: Evidence, path: Path) -> None:
    """Nnv, Nv and H of the envelope points against C, the fitted power laws, their bootstrap
    bands, extended (dashed) to the targets' budgets."""
    fitted = evidence.need("isoflops")
    envelope = isoflops_envelope(evidence)
    level = evidence.confidence
    replicates = fitted.get("bootstrap") or []
    low, high = fitted.get("flops_range") or [envelope["flops"].min(), envelope["flops"].max()]
    rows = evidence.predictions[evidence.predictions["approach"] == "isoflops"]
    reach = max(high, float(rows["flops"].max()) if not rows.empty else high) * 1.5
    grid = log_spaced(low / 1.5, reach, 200)
    panels = [
        ("non_vocab_params", "K1", "nnv_exponent", "non-vocabulary params Nnv", "Nnv"),
        ("vocab_params", "K2", "gamma", "vocabulary params Nv = V d", "Nv"),
        ("characters", "K3", "characters_exponent", "training characters H", "H"),
    ]
    panels = [p for p in panels if fitted.get(p[1]) is not None]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.4), layout="constrained")
    axes = np.atleast_1d(axes)
    for ax, (column, key, exponent, label, symbol) in zip(axes, panels):
        slope = float(fitted.get(exponent) or 0.5)
        line = np.exp(fitted[key]) * grid**slope
        inside = (grid >= low) & (grid <= high)
        ax.scatter(
            envelope["flops"], envelope[column], s=10, color="grey", alpha=0.7, label="envelope"
        )
        ax.plot(
            grid[inside],
            line[inside],
            color="tab:blue",
            lw=2,
            label=f"{symbol} = e^{fitted[key]:.3g} C^{slope:.3g}",
        )
        ax.plot(
            grid[grid >= high], line[grid >= high], color="tab:blue", lw=1.2, ls="--", label=None
        )
        band = _replicate_band(fitted, key, exponent, grid, level)
        if band is not None:
            ax.fill_between(
                grid,
                band[0],
                band[1],
                color="tab:blue",
                alpha=0.18,
                lw=0,
                label=f"{level:.0%} bootstrap band ({len(replicates)} refits)",
            )
        if column in ("vocab_params", "non_vocab_params") and not rows.empty:
            ax.scatter(
                rows["flops"],
                rows["vocab_params" if column == "vocab_params" else "nnv"],
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
        ax.set_ylabel(f"{label}  [log]")
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(
        "Approach 1 power laws on the envelope (shaded: beyond the fitted compute, dashed line "
        "= extrapolation)",
        fontsize=10,
    )
    _save(fig, path)


# --- approach 3 ------------------------------------------------------------------------------


def parametric_tokens(fitted: dict[str, Any], runs: pd.DataFrame, f: TokensPerChar | None):
    """The D the parametric fit saw: true tokens, or H f(V/1000) under the compatibility switch."""
    if (fitted.get("options") or {}).get("authors_tokenization") and f is not None:
        return runs["characters"].to_numpy(float) * f(runs["vocab_size"].to_numpy(float) / 1000)
    return runs["tokens"].to_numpy(float)


def figure_parametric_fit(evidence: Evidence, path: Path) -> None:
    """Approach 3's L_u against the observed L_u of every checkpoint, and the residuals."""
    fitted = evidence.need("parametric")
    runs = evidence.need_runs()
    min_flops = float((fitted.get("options") or {}).get("min_flops", 0.0))
    predicted = parametric.loss_u(
        fitted,
        runs["non_vocab_params"].to_numpy(float),
        runs["vocab_params"].to_numpy(float),
        parametric_tokens(fitted, runs, evidence.tokens_per_char),
    )
    observed = runs["loss_u"].to_numpy(float)
    used = runs["flops"].to_numpy(float) >= min_flops
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
                label=f"C < {min_flops:.3g}: not fitted",
            )
    span = [min(observed.min(), predicted.min()), max(observed.max(), predicted.max())]
    left.plot(span, span, color="black", lw=0.8, ls="--", label="predicted = observed")
    left.set_xlabel("observed L_u  [nats/token]")
    left.set_ylabel("approach 3 L_u  [nats/token]")
    quality = fitted.get("fit") or {}
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
    for vocab_size, colour in colours.items():
        right.scatter([], [], s=14, color=colour, label=f"V = {vocab_size:,.0f}")
    right.set_xscale("log")
    right.set_xlabel(FLOPS_LABEL)
    right.set_ylabel("residual: observed − predicted L_u  [nats/token]")
    right.set_title("Residuals against compute (structure here = a misfit law)", fontsize=10)
    _legend_outside(right)
    if (fitted.get("options") or {}).get("authors_tokenization"):
        fig.suptitle(
            "Compatibility switch on: D in this fit is H f(V/1000), as in the authors' code",
            fontsize=9,
            color="tab:red",
        )
    _save(fig, path)


def budget_reference(evidence: Evidence, target: dict[str, Any]) -> float | None:
    """The 1x budget of a target: approach 1's compute-optimal one, else the target's own."""
    isoflops = evidence.fitted("isoflops")
    if isoflops is not None:
        return optimal_flops(isoflops, target["nnv"])
    return target.get("flops")


def figure_budget_multiple(evidence: Evidence, path: Path) -> None:
    """Approach 3's optimal V for each target when it is under- or over-trained."""
    evidence.need("parametric")
    multiples = log_spaced(*sorted(evidence.settings["budget_range"]), 41)
    fig, ax = plt.subplots(figsize=(8, 4.8), layout="constrained")
    cmap = plt.get_cmap("plasma")
    drawn, all_values, any_edge, all_edges, any_own = 0, [], False, True, False
    for index, target in enumerate(evidence.targets):
        reference = budget_reference(evidence, target)
        if reference is None:
            continue
        values, edges = [], []
        for multiple in multiples:
            answer = predict_one(
                evidence.coefficients,
                "parametric",
                target["nnv"],
                target["d_model"],
                multiple * reference,
            )
            values.append(answer["vocab_size"])
            edges.append(answer.get("at_search_bound", False))
        values, edges = np.asarray(values), np.asarray(edges)
        colour = cmap(0.85 * index / max(1, len(evidence.targets) - 1))
        ax.plot(multiples, values, color=colour, lw=1.8, label=f"{target['name']}")
        own = target.get("flops")
        if own and evidence.fitted("isoflops") is not None:
            answer = predict_one(
                evidence.coefficients, "parametric", target["nnv"], target["d_model"], own
            )
            ax.scatter([own / reference], [answer["vocab_size"]], color=colour, s=40, zorder=4)
            any_own = True
        all_edges &= bool(edges.all())
        if edges.any():
            any_edge = True
            ax.scatter(multiples[edges], values[edges], facecolors="none", edgecolors=colour, s=30)
        all_values.append(values)
        drawn += 1
    if not drawn:
        raise Skipped("needs a compute-optimal budget (approach 1) or targets with `flops`")
    if any_edge:
        ax.scatter(
            [], [], facecolors="none", edgecolors="black", s=30, label="at the V search bound"
        )
    if any_own:
        ax.scatter([], [], color="black", s=40, label="the target's own budget")
    values = np.concatenate(all_values)
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    if high < 2 * low:  # a flat answer: keep the axis readable instead of zooming into noise
        ax.set_ylim(low / 2, high * 2)
    optimal = evidence.fitted("isoflops") is not None
    ax.axvline(1.0, color="grey", lw=0.8, ls="--")
    ax.annotate(
        " compute-optimal (1x)" if optimal else " the target's budget (1x)",
        (1.0, 0.02),
        xycoords=("data", "axes fraction"),
        fontsize=7,
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_log_ticks(ax.yaxis, minor_labels=high < 100 * low)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.set_xlabel(
        "budget / compute-optimal budget  (< 1x under-trained, > 1x over-trained)"
        if optimal
        else "budget / the target's `flops` (no approach 1: the compute-optimal budget is unknown)"
    )
    ax.set_ylabel("approach 3 optimal V  [tokens, log]")
    heading = "Optimal vocabulary against the training budget (approach 3)"
    if all_edges:
        heading += "\nevery answer is at the edge of the V search: the fit has no interior optimum"
    ax.set_title(heading, fontsize=10)
    _legend_outside(ax, title="target")
    _save(fig, path)


# --- all approaches --------------------------------------------------------------------------


def width_curve(pairs: list[tuple[float, float]]) -> Callable[[np.ndarray], np.ndarray]:
    """d as a function of Nnv: a power law through the known (Nnv, d) pairs (smooth, so the
    curves show the approaches and not the widths), the paper's mapping when fewer than two."""
    known = sorted({(float(n), float(d)) for n, d in pairs})
    if len({n for n, _ in known}) < 2:
        return lambda nnv: np.array([width_for_nnv(n) for n in np.atleast_1d(nnv)], float)
    slope, intercept = np.polyfit(np.log([n for n, _ in known]), np.log([d for _, d in known]), 1)
    return lambda nnv: np.exp(intercept + slope * np.log(nnv))


def _curve(coefficients: dict, approach: str, grid: np.ndarray, width) -> np.ndarray:
    values = []
    reference = coefficients.get("isoflops")
    for nnv, d in zip(grid, width(grid)):
        budget = None
        if reference and "error" not in reference:
            budget = optimal_flops(reference, nnv)
        try:
            answer = predict_one(coefficients, approach, nnv, d, budget)
        except (ValueError, KeyError):
            answer = None
        values.append(answer["vocab_params"] if answer else np.nan)
    return np.asarray(values, float)


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


def figure_vocab_vs_nnv(evidence: Evidence, path: Path) -> None:
    """Nv against Nnv: each approach's curve (and the published one), the sweep, the targets
    and the vocabularies of well-known public models."""
    approaches = [a for a in APPROACHES if evidence.fitted(a)]
    if not approaches:
        raise Skipped("no approach was fitted")
    pairs = [(t["nnv"], t["d_model"]) for t in evidence.targets]
    nnv_values = [t["nnv"] for t in evidence.targets] + [m["nnv"] for m in evidence.public_models]
    if evidence.runs is not None:
        models = evidence.runs.groupby("non_vocab_params")["d_model"].first()
        pairs += list(models.items())
        nnv_values += list(models.index)
    width = width_curve(pairs)
    grid = log_spaced(min(nnv_values) / 2, max(nnv_values) * 2, 80)
    fig, ax = plt.subplots(figsize=(9.5, 5.6), layout="constrained")
    ax.set_xscale("log")
    ax.set_yscale("log")
    for approach in approaches:
        fitted = _curve(evidence.coefficients, approach, grid, width)
        if np.isfinite(fitted).any():  # approach 3 needs approach 1's budget
            ax.plot(grid, fitted, color=colour(approach), lw=2, label=f"{title(approach)} (fitted)")
        ax.plot(
            grid,
            _curve(PAPER_COEFFICIENTS, approach, grid, width),
            color=colour(approach),
            lw=1,
            ls="--",
            alpha=0.7,
            label=f"{title(approach)} (published)",
        )
    if evidence.runs is not None:
        sweep = evidence.runs.groupby(["non_vocab_params", "vocab_size"])["vocab_params"].first()
        ax.scatter(
            sweep.index.get_level_values(0),
            sweep.to_numpy(),
            s=12,
            color="grey",
            marker="s",
            label="trained runs (the sweep)",
        )
    rows = evidence.predictions[evidence.predictions["approach"].isin(approaches)]
    ax.scatter(
        rows["nnv"],
        rows["vocab_params"],
        s=28,
        c=[colour(a) for a in rows["approach"]],
        edgecolors="black",
        linewidths=0.5,
        zorder=4,
        label="targets' predictions",
    )
    if evidence.public_models:
        models = evidence.public_models
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
        ax.set_xlim(min(nnv_values) / 3, max(nnv_values) * 30)
    ax.set_xlabel("non-vocabulary parameters Nnv  [log]")
    ax.set_ylabel("vocabulary parameters Nv = V d  [log]")
    heading = "Compute-optimal Nv against Nnv"
    if evidence.fitted("isoflops"):
        heading += ", at approach 1's optimal budget"
    ax.set_title(heading, fontsize=10)
    _legend_outside(ax)
    _save(fig, path)


def figure_downstream(evidence: Evidence, path: Path) -> None:
    """Downstream accuracy against V, one panel per task and one line per model shape (whose
    runs share Nnv and tokens), with one standard error and each approach's predicted V."""
    table = evidence.need_downstream()
    metric = downstream_metric(table)
    predicted = downstream_predictions(evidence)
    tasks = list(dict.fromkeys(table["task"]))
    columns = min(len(tasks), 3)
    rows = -(-len(tasks) // columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(4.6 * columns, 3.8 * rows), squeeze=False, layout="constrained"
    )
    markers = model_markers(table["non_vocab_params"])
    for ax, task in zip(axes.flat, tasks):
        for model, runs in table[table["task"] == task].groupby("model", sort=False):
            runs = runs.sort_values("vocab_size")
            nnv = float(runs["non_vocab_params"].iloc[0])
            ax.errorbar(
                runs["vocab_size"],
                runs[metric],
                yerr=runs[f"{metric}_stderr"],
                marker=markers[nnv],
                color="black",
                capsize=3,
                lw=1,
                label=f"{model} (Nnv {human(nnv)}, C {runs['flops'].min():.2g}"
                f"-{runs['flops'].max():.2g})",
            )
            for approach in predicted[predicted["model"] == model].itertuples():
                ax.scatter(
                    approach.vocab_size,
                    0.97,
                    transform=ax.get_xaxis_transform(),
                    marker=markers[nnv],
                    s=40,
                    color=colour(approach.approach),
                    edgecolors="black",
                    linewidths=0.5,
                    zorder=4,
                )
        ax.margins(y=0.2)  # room along the top for the predicted V
        ax.set_xscale("log")
        _plain_log_ticks(ax.xaxis)
        ax.set_title(task)
        ax.set_xlabel("vocabulary size V")
        ax.set_ylabel(metric)
    for ax in axes.flat[len(tasks) :]:
        ax.remove()
    first = axes.flat[0]
    for approach in dict.fromkeys(predicted["approach"]):
        first.scatter([], [], color=colour(approach), label=f"{title(approach)}: predicted V")
    handles, labels = first.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize=8, frameon=False)
    _save(fig, path)


@dataclass(frozen=True)
class FigureSpec:
    name: str
    title: str
    draw: Callable[[Evidence, Path], None]
    caption: str


FIGURES: tuple[FigureSpec, ...] = (
    FigureSpec(
        "tokens_per_char",
        "Tokens per character f(V)",
        figure_tokens_per_char,
        "The tokenizers' measured tokens per character (dots) and the quadratic-in-ln V fit the "
        "estimators used (solid where measured, dashed where extrapolated to the predicted V). "
        "Every conversion between characters and tokens, and the whole derivative approach, "
        "rests on this curve; the paper's SlimPajama fit is dotted for reference.",
    ),
    FigureSpec(
        "loss_vs_compute",
        "Every run: L_u against compute",
        figure_loss_vs_compute,
        "One line per run through its evaluation checkpoints, coloured by vocabulary size. "
        "Runs excluded as diverged, if any, are red crosses.",
    ),
    FigureSpec(
        "isoflops_envelope",
        "Approach 1: the IsoFLOPs envelope",
        figure_isoflops_envelope,
        "Walking up in compute, a point joins the envelope when its L_u beats every point "
        "before it. The envelope points (coloured by their V; squares and triangles are "
        "interpolated between runs) are the compute-optimal configurations the power laws "
        "are fitted on.",
    ),
    FigureSpec(
        "isoflops_power_laws",
        "Approach 1: power laws with intervals",
        figure_isoflops_power_laws,
        "Nnv, Nv and H of the envelope points against compute, the Huber-fitted power laws "
        "and the band the bootstrap refits span. The shaded region is beyond the largest "
        "compute fitted: the red stars (the targets) sit where the prediction is an "
        "extrapolation.",
    ),
    FigureSpec(
        "parametric_fit",
        "Approach 3: predicted against observed loss",
        figure_parametric_fit,
        "Left: the fitted L_u(Nnv, Nv, D) against every checkpoint's L_u (hollow: below the fit's "
        "compute threshold). Right: residuals against compute; a trend or a fan here means "
        "the functional form does not fit these runs.",
    ),
    FigureSpec(
        "vocab_vs_nnv",
        "All approaches: Nv against Nnv",
        figure_vocab_vs_nnv,
        "Each approach's compute-optimal vocabulary parameters as Nnv grows (solid: fitted "
        "here; dashed: the paper's published coefficients), the sweep that was trained "
        "(grey squares), the targets' predictions, and what well-known public models chose "
        "(red stars, V in brackets).",
    ),
    FigureSpec(
        "budget_multiple",
        "Approach 3: optimal V against the training budget",
        figure_budget_multiple,
        "For each target, approach 3's optimal V when trained on a fraction or a multiple of "
        "the compute-optimal budget (1x = approach 1's optimum for its Nnv). More data per "
        "parameter favours a larger vocabulary. Hollow circles: the optimum hit the edge of "
        "the V search range.",
    ),
    FigureSpec(
        "downstream",
        "Downstream: accuracy against V",
        figure_downstream,
        "Each run scored by lm-evaluation-harness on each task, with one standard error. A "
        "line is one model shape: its runs have the same Nnv and were trained on the same "
        "tokens, so their compute differs only by the vocabulary's share, 6 V d D (its range "
        "in the legend). The markers along the top are each approach's predicted V for that "
        "model (approach 3 at its compute, approaches 1 and 2 at the compute-optimal budget of "
        "its Nnv), in the approach's colour and the model's marker.",
    ),
)


def draw_figures(evidence: Evidence, directory: Path) -> dict[str, str | None]:
    """Draw every figure into `directory`; {name: None when drawn, else why it was skipped}."""
    outcome: dict[str, str | None] = {}
    for spec in FIGURES:
        try:
            spec.draw(evidence, directory / f"{spec.name}.png")
            outcome[spec.name] = None
        except Skipped as reason:
            plt.close("all")
            outcome[spec.name] = str(reason)
    return outcome
