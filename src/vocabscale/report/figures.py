"""The report's figures of the data: f(V), every run's loss, the downstream scores and the
backtest; `fit_figures` holds those of the fits. Each draws the data `curves` computed for it
(a figure computes nothing of the model) into a PNG.

Every compute axis uses the paper's convention C = 6 (Nnv + V d) D (attention FLOPs left out).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from vocabscale.estimate.predict import RECOMMENDED
from vocabscale.report.curves import (
    DownstreamData,
    RunsData,
    TokensPerCharCurves,
)
from vocabscale.report.evidence import title
from vocabscale.report.numbers import human
from vocabscale.report.plotting import (
    FLOPS_LABEL,
    colour,
    legend_below,
    legend_outside,
    model_markers,
    plain_log_ticks,
    save,
    vocab_colours,
)
from vocabscale.tokens_per_char import TOKENS_PER_CHAR_MAX_VOCAB

# --- the data --------------------------------------------------------------------------------


def figure_tokens_per_char(data: TokensPerCharCurves, path: Path) -> None:
    """f(V): the fitted curve over the tokenizers' measured tokens per character."""
    fig, ax = plt.subplots(figsize=(7.5, 5.2), layout="constrained")
    points, f = data.points, data.f
    if points is not None and not points.empty:
        ax.scatter(
            points["vocab_size"],
            points["tokens_per_character"],
            s=36,
            c="black",
            zorder=3,
            label=f"measured ({data.points_source})",
        )
    if data.fitted is not None:
        ax.plot(
            *data.fitted,
            color="tab:red",
            lw=2,
            label=f"f(V) the estimators used = {f.a:.4g} ln²V {f.b:+.4g} ln V {f.c:+.4g}"
            + (f"  [{data.source}]" if data.source else ""),
        )
    if data.beyond is not None:
        ax.plot(*data.beyond, color="tab:red", lw=1.5, ls="--", label="f(V) extrapolated")
    if data.below is not None:
        ax.plot(*data.below, color="tab:red", lw=1.5, ls="--")
    ax.plot(*data.paper, color="grey", lw=1, ls=":", label="paper's fit on SlimPajama (reference)")
    if data.clamp_shown:
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
    plain_log_ticks(ax.xaxis)
    ax.set_xlabel("vocabulary size V  [tokens, log scale]")
    ax.set_ylabel("f(V)  [tokens per character]")
    ax.set_title("Tokens per character: f(V) = a ln²V + b ln V + c", fontsize=10)
    legend_below(ax)
    save(fig, path)


def figure_loss_vs_compute(data: RunsData, path: Path) -> None:
    """Every run's checkpoints, L_u against C, coloured by V; diverged rows marked."""
    runs = data.runs
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
    for vocab_size, shade in colours.items():
        ax.plot([], [], "-", color=shade, lw=2, label=f"V = {vocab_size:,.0f}")
    for nnv, marker in markers.items():
        ax.plot([], [], marker, color="grey", ls="none", ms=4, label=f"Nnv = {human(nnv)}")
    diverged = data.diverged
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
    legend_outside(ax)
    save(fig, path)


def figure_downstream(data: DownstreamData, path: Path) -> None:
    """Downstream accuracy against V, one panel per task and one line per model shape (whose
    runs share Nnv and tokens), with one standard error and each approach's predicted V."""
    table, metric, predicted = data.table, data.metric, data.predicted
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
        plain_log_ticks(ax.xaxis)
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
    save(fig, path)


def _error_bars(values: pd.Series, low: pd.Series, high: pd.Series) -> np.ndarray:
    """Asymmetric error bars (zero where there is no interval)."""
    below = (values - low).fillna(0.0).clip(lower=0.0)
    above = (high - values).fillna(0.0).clip(lower=0.0)
    return np.vstack([below.to_numpy(float), above.to_numpy(float)])


def figure_backtest(points: pd.DataFrame, path: Path) -> None:
    """Predicted V against the held-out runs' own best V, both with intervals, per approach."""
    fig, ax = plt.subplots(figsize=(7.5, 5.6), layout="constrained")
    markers = model_markers(points["nnv"])
    for approach, rows in points.groupby("approach", sort=False):
        shade = colour(approach)
        for nnv, group in rows.groupby("nnv"):
            if approach == RECOMMENDED:  # hollow, over the approaches it combines
                ax.scatter(
                    group["empirical_vocab_size"],
                    group["vocab_size"],
                    marker=markers[float(nnv)],
                    s=90,
                    facecolors="none",
                    edgecolors="black",
                    zorder=5,
                )
                continue
            ax.errorbar(
                group["empirical_vocab_size"],
                group["vocab_size"],
                xerr=_error_bars(
                    group["empirical_vocab_size"], group["empirical_low"], group["empirical_high"]
                ),
                yerr=_error_bars(
                    group["vocab_size"], group.get("vocab_size_low"), group.get("vocab_size_high")
                ),
                fmt=markers[float(nnv)],
                color=shade,
                ms=5,
                capsize=2,
                lw=0.8,
                alpha=0.85,
            )
        hollow = {"mfc": "none", "ms": 9} if approach == RECOMMENDED else {}
        ax.plot([], [], "o", color=shade, label=title(approach), **hollow)
    for nnv, marker in markers.items():
        name = points.loc[points["nnv"] == nnv, "model"].iloc[0]
        ax.plot([], [], marker, color="grey", ls="none", label=f"{name} (Nnv {human(nnv)})")
    values = points[["vocab_size", "empirical_vocab_size"]].to_numpy(float)
    low, high = np.nanmin(values) / 1.6, np.nanmax(values) * 1.6
    diagonal = np.array([low, high])
    ax.plot(diagonal, diagonal, color="grey", lw=1)
    for factor in (1.5, 1 / 1.5):
        ax.plot(diagonal, diagonal * factor, color="grey", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    plain_log_ticks(ax.xaxis)
    plain_log_ticks(ax.yaxis)
    ax.set_xlabel("the held-out runs' best V  [their vertex at the budget]")
    ax.set_ylabel("predicted V  [fitted without those runs]")
    ax.set_title("Out-of-sample: what each approach predicted for runs it did not see", fontsize=10)
    legend_outside(ax)
    save(fig, path)
