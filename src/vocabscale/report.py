"""Stage report: the predicted vocabulary size of each approach for each target, the evidence
behind it, and what to doubt.

Runs on any estimates directory (the three approaches' JSON files, or one coefficients.json), so
a report can be rebuilt from results pulled with DVC or fitted on another team's runs table.
Outputs: report.md, figures/*.png, predictions.csv, summary.json (the metrics DVC shows),
coefficients.json (everything the predictions came from).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from vocabscale.accounting import width_for_nnv
from vocabscale.estimate import predictions_table
from vocabscale.io import atomic_dir, to_json, write_csv, write_json
from vocabscale.predict import (
    APPROACHES,
    PAPER_COEFFICIENTS,
    load_coefficients,
    predict,
)

log = logging.getLogger(__name__)

TITLES = {"isoflops": "IsoFLOPs", "derivative": "Derivative", "parametric": "Parametric"}


def round_to_multiple(value: float, multiple: int) -> int:
    return int(max(multiple, multiple * round(value / multiple)))


def _figure_loss_vs_compute(runs: pd.DataFrame, coefficients: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    vocabularies = sorted(runs["vocab_size"].unique())
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(vocabularies)))
    for colour, vocab_size in zip(colours, vocabularies):
        for _, run in runs[runs["vocab_size"] == vocab_size].groupby("run_id"):
            run = run.sort_values("flops")
            ax.plot(
                run["flops"],
                run["loss_u"],
                "o-",
                color=colour,
                ms=3,
                lw=1,
                label=f"V={vocab_size:,}",
            )
    envelope = pd.DataFrame((coefficients.get("isoflops") or {}).get("envelope", []))
    if not envelope.empty:
        ax.plot(envelope["flops"], envelope["loss_u"], "k--", lw=1.2, label="IsoFLOPs envelope")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=7, ncol=2)
    ax.set_xscale("log")
    ax.set_xlabel("training compute C = 6 (Nnv + V d) D  [FLOPs]")
    ax.set_ylabel("unigram-normalized loss L_u  [nats/token]")
    ax.set_title("Every run's checkpoints, coloured by vocabulary size")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _figure_vocab_vs_nnv(
    coefficients: dict, targets: list[dict], runs: pd.DataFrame, path: Path
) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    low = min(runs["non_vocab_params"].min(), min(t["nnv"] for t in targets)) / 2
    high = max(runs["non_vocab_params"].max(), max(t["nnv"] for t in targets)) * 2
    grid = np.exp(np.linspace(np.log(low), np.log(high), 60))
    for approach in APPROACHES:
        if approach not in coefficients:
            continue
        values = [
            predict(coefficients, n, width_for_nnv(n))["approaches"].get(approach) for n in grid
        ]
        ax.plot(grid, [v["vocab_params"] if v else np.nan for v in values], label=TITLES[approach])
    observed = runs.groupby(["non_vocab_params", "vocab_size"])["vocab_params"].first()
    ax.scatter(
        [i[0] for i in observed.index], observed.to_numpy(), s=10, c="grey", label="trained runs"
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("non-vocabulary parameters Nnv")
    ax.set_ylabel("optimal vocabulary parameters Nv = V d")
    ax.set_title("Compute-optimal Nv against Nnv (width from the paper's mapping)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build_report(
    estimates: str | Path, runs_path: str | Path, report: dict[str, Any], out_dir: str | Path
) -> dict[str, Any]:
    coefficients = load_coefficients(estimates)
    runs = pd.read_csv(runs_path)
    targets = [
        {**t, "d_model": t.get("d_model") or width_for_nnv(t["nnv"])} for t in report["targets"]
    ]
    confidence = next(
        (coefficients[a].get("bootstrap_confidence", 0.9) for a in APPROACHES if a in coefficients),
        0.9,
    )
    table = predictions_table(coefficients, targets, confidence)
    paper = predictions_table(PAPER_COEFFICIENTS, targets)
    table = table.merge(
        paper[["target", "approach", "vocab_size"]].rename(
            columns={"vocab_size": "paper_vocab_size"}
        ),
        on=["target", "approach"],
        how="left",
    )
    table["vocab_size_rounded"] = [
        round_to_multiple(v, report["round_to"]) for v in table["vocab_size"]
    ]
    with atomic_dir(out_dir) as tmp:
        (tmp / "figures").mkdir()
        _figure_loss_vs_compute(runs, coefficients, tmp / "figures" / "loss_vs_compute.png")
        _figure_vocab_vs_nnv(coefficients, targets, runs, tmp / "figures" / "vocab_vs_nnv.png")
        write_csv(tmp / "predictions.csv", table)
        (tmp / "coefficients.json").write_text(to_json(coefficients))
        summary = {
            t: {a: round(v) for a, v in zip(group["approach"], group["vocab_size"])}
            for t, group in table.groupby("target", sort=False)
        }
        write_json(tmp / "summary.json", {"predicted_vocab_size": summary})
        (tmp / "report.md").write_text(render_markdown(table, coefficients, runs, report))
    return {"predictions": table}


def _interval(row) -> str:
    if np.isnan(row["vocab_size_low"]):
        return "n/a"
    return f"{row['vocab_size_low']:,.0f} – {row['vocab_size_high']:,.0f}"


def render_markdown(
    table: pd.DataFrame, coefficients: dict, runs: pd.DataFrame, report: dict[str, Any]
) -> str:
    lines = ["# vocabscale prediction report", ""]
    lines += [
        f"Runs: {runs['run_id'].nunique()} ({runs['non_vocab_params'].nunique()} model "
        f"shapes x {runs['vocab_size'].nunique()} vocabulary sizes), {len(runs)} "
        "evaluation checkpoints.",
        "",
    ]
    lines += [
        "## Predicted vocabulary size",
        "",
        f"V rounded to a multiple of {report['round_to']} in brackets; intervals are "
        "bootstrap percentiles over runs; 'paper' is the same approach with the published "
        "coefficients.",
        "",
        "| target | Nnv | d | approach | C (FLOPs) | V | interval | paper V |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for _, row in table.iterrows():
        lines.append(
            f"| {row['target']} | {row['nnv']:.3g} | {int(row['d_model'])} | "
            f"{TITLES[row['approach']]} | {row['flops']:.3g} | {row['vocab_size']:,.0f} "
            f"({row['vocab_size_rounded']:,}) | {_interval(row)} | "
            f"{row['paper_vocab_size']:,.0f} |"
        )
    lines += [
        "",
        "![L_u against compute](figures/loss_vs_compute.png)",
        "",
        "![Nv against Nnv](figures/vocab_vs_nnv.png)",
        "",
        "## Coefficients",
        "",
    ]
    for approach in APPROACHES:
        fitted = coefficients.get(approach)
        if not fitted:
            lines.append(
                f"- {TITLES[approach]}: not fitted "
                f"({coefficients.get('failed', {}).get(approach, 'missing')})"
            )
            continue
        keys = {
            "isoflops": ("K1", "K2", "K3", "gamma"),
            "derivative": ("gamma",),
            "parametric": ("E", "A1", "A2", "B", "alpha1", "alpha2"),
        }[approach]
        values = ", ".join(f"{k} = {fitted[k]:.4g}" for k in keys if fitted.get(k) is not None)
        lines.append(f"- {TITLES[approach]}: {values}")
    lines.append("")
    return "\n".join(lines)
