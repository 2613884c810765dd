"""The report's formats: Markdown (report.md), one self-contained HTML page (report.html), the
flat numbers of summary.json for `dvc metrics` and the envelope of isoflops_envelope.csv for
`dvc plots`. Everything here formats what `evidence` and `doubts` computed; nothing is fitted.
"""

from __future__ import annotations

import base64
import html
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vocabscale.estimate.approaches import APPROACHES
from vocabscale.estimate.predict import RECOMMENDED
from vocabscale.estimate.results import Estimates
from vocabscale.report.contents import FIGURES, figure_markdown
from vocabscale.report.doubts import CHECKS, meaning_of
from vocabscale.report.evidence import (
    Evidence,
    Skipped,
    isoflops_envelope,
    target_distances,
    title,
)
from vocabscale.report.numbers import human, range_text, sci, times
from vocabscale.report.recommendation import backtest_markdown, recommendation_markdown
from vocabscale.report.sections import target_comparison_markdown

#: What the intervals of the approaches cover, and what they do not.
INTERVAL_TEXT = (
    "Intervals are {level} bootstrap intervals: every approach refitted on replicate tables "
    "that keep every run and redraw the noise the runs show (seed-to-seed and "
    "checkpoint-to-checkpoint), the estimate times the spread of the refits about the same fit "
    "on the smoothed runs, so an interval always holds its estimate (n/a: no refits). Approach "
    "2's interval includes the uncertainty of its anchor and, when f(V) was fitted, of f(V); "
    "approach 3's, at the compute-optimal budget, that of approach 1's budget. They do not "
    "cover a law that does not hold for these runs: how far each approach misses on runs it "
    "did not see is the backtest's measure (above), and only the recommendation's interval "
    "includes it. *left out*: the share of refits that ended on a bound or at a search edge "
    "(or failed), which the interval does not include. *No answer*: a fit that ended on a "
    "parameter bound, or whose optimum lies at the edge of the V it searched, gives a bound, "
    "not a V. *paper V* is the same approach with the published coefficients of Tao et al. "
    "2024. Approaches 1 and 2 answer for the compute-optimal budget; C is approach 1's "
    "optimum unless the target names a budget."
)


def _predictions_markdown(evidence: Evidence) -> list[str]:
    table = evidence.predictions[evidence.predictions["approach"] != RECOMMENDED]
    lines = [
        f"V is rounded to a multiple of {evidence.settings['round_to']} in brackets. "
        + INTERVAL_TEXT.format(level=f"{evidence.confidence:.0%}"),
        "",
        "| target | Nnv | d | approach | C (FLOPs) | V (rounded) | V interval | left out | Nv | "
        "Nv interval | paper V |",
        "|---|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in table.itertuples(index=False):
        paper = row.paper_vocab_size
        start = f"| {row.target} | {human(row.nnv)} | {int(row.d_model)} | {title(row.approach)} | "
        start += f"{sci(row.flops)} | "
        if pd.isna(row.vocab_size):
            lines.append(start + f"no answer: {row.reason} | | | | | {number_text(paper)} |")
            continue
        lines.append(
            start + f"{row.vocab_size:,.0f} ({row.vocab_size_rounded:,}) | "
            f"{range_text(row.vocab_size_low, row.vocab_size_high)} | "
            f"{share_text(getattr(row, 'refits_excluded_share', math.nan))} | "
            f"{human(row.vocab_params)} | "
            f"{range_text(row.vocab_params_low, row.vocab_params_high, human)} | "
            f"{number_text(paper)} |"
        )
    return lines


def number_text(value: float) -> str:
    return "n/a" if pd.isna(value) else f"{value:,.0f}"


def answer_text(value: float) -> str:
    return "no answer" if pd.isna(value) else f"{value:,.0f}"


def share_text(share: float) -> str:
    return "n/a" if pd.isna(share) else f"{share:.0%}"


def _comparison_markdown(evidence: Evidence) -> list[str]:
    """Both methods side by side for each target (`report.compare_authors`)."""
    other = evidence.comparison
    if other is None or other.empty:
        return []
    main = evidence.predictions[evidence.predictions["approach"].isin(APPROACHES)]
    main_method = str(main["method"].iloc[0]) if "method" in main and len(main) else "corrected"
    other_method = str(other["method"].iloc[0]) if len(other) else "authors"
    by_key = other.set_index(["target", "approach"])
    lines = [
        "## Both methods side by side",
        "",
        f"The same runs fitted with the {main_method} method (above) and with the "
        f"{other_method} method (`estimate.method`; docs/design.md, section 6, says what "
        f"differs and why). Intervals: {evidence.confidence:.0%}, as above.",
        "",
        f"| target | approach | {main_method} V | interval | {other_method} V | interval | "
        "paper V |",
        "|---|---|--:|--:|--:|--:|--:|",
    ]
    for row in main.itertuples(index=False):
        if (row.target, row.approach) not in by_key.index:
            continue
        alt = by_key.loc[(row.target, row.approach)]
        paper = row.paper_vocab_size
        lines.append(
            f"| {row.target} | {title(row.approach)} | {answer_text(row.vocab_size)} | "
            f"{range_text(row.vocab_size_low, row.vocab_size_high)} | "
            f"{answer_text(alt['vocab_size'])} | "
            f"{range_text(alt['vocab_size_low'], alt['vocab_size_high'])} | "
            f"{number_text(paper)} |"
        )
    return [*lines, ""]


def _doubts_markdown(evidence: Evidence, doubts: list[dict[str, Any]]) -> list[str]:
    """The doubts grouped by kind: a bold title and its meaning, then each finding."""
    far = float(evidence.settings["extrapolation_warn"])
    apart = float(evidence.settings["disagreement_warn"])
    lines = []
    if doubts:
        lines += [f"{len(doubts)} warning(s), found in the data:", ""]
        for registered in CHECKS:
            found = [d["message"] for d in doubts if d["kind"] == registered.kind]
            if not found:
                continue
            meaning = meaning_of(registered, evidence)
            head = f"- **{registered.title}.**" + (f" {meaning}" if meaning else "")
            if len(found) == 1:
                lines.append(f"{head} {found[0]}")
            else:
                lines.append(head)
                lines += [f"  - {message}" for message in found]
    else:
        lines += [
            f"No warning fired: no runs excluded, every target within {far:g}x of the compute "
            f"fitted, the approaches within {apart:g}x of each other, no parameter on a bound, "
            "every optimum inside its search range and inside the sweep."
        ]
    lines += [
        "",
        "How far each target is from the evidence (extrapolation: the target's budget over the "
        "largest compute fitted; spread: largest over smallest V of the three approaches):",
        "",
        "| target | C (FLOPs) | extrapolation | spread |",
        "|---|--:|--:|--:|",
    ]
    for row in target_distances(evidence).itertuples(index=False):
        spread = f"{row.disagreement:.2f}x" if np.isfinite(row.disagreement) else "n/a"
        lines.append(f"| {row.target} | {sci(row.flops)} | {times(row.extrapolation)} | {spread} |")
    return lines


def _fit_quality(fit: dict[str, Any]) -> str:
    """R², RMSE and points of a fit record; of each of its parts when it has several (approach
    1 fits three power laws)."""
    if any(isinstance(part, dict) and "r_squared" in part for part in fit.values()):
        return ", ".join(
            f"R²({name}) = {part['r_squared']:.3f}"
            for name, part in fit.items()
            if isinstance(part, dict) and part.get("r_squared") is not None
        )
    quality = ", ".join(
        f"{k} = {fit[k]:.3g}" for k in ("r_squared", "rmse") if fit.get(k) is not None
    )
    return quality + (f", {fit['points']} points" if fit.get("points") else "")


def _coefficients_markdown(estimates: Estimates) -> list[str]:
    lines = ["| approach | coefficients | fit quality | options |", "|---|---|---|---|"]
    for name, approach in APPROACHES.items():
        fit = estimates.fit(name)
        if fit is None:
            reason = estimates.failed.get(name, "absent")
            lines.append(f"| {approach.title} | not fitted: {reason} | | |")
            continue
        values = ", ".join(
            f"{k} = {v:.4g}" for k, v in fit.coefficients.items() if isinstance(v, (int, float))
        )
        options = ", ".join(f"{k} = {v}" for k, v in fit.options.items() if not isinstance(v, dict))
        lines.append(f"| {approach.title} | {values} | {_fit_quality(fit.quality)} | {options} |")
    tokenization = estimates.tokenization or {}
    if all(k in tokenization for k in "abc"):
        lines.append(
            f"| f(V) | a = {tokenization['a']:.5g}, b = {tokenization['b']:.5g}, "
            f"c = {tokenization['c']:.5g} | "
            + (f"R² = {tokenization['r_squared']:.4f}" if "r_squared" in tokenization else "")
            + f" | source: {tokenization.get('source', 'n/a')} |"
        )
    return lines


def render_markdown(
    evidence: Evidence, doubts: list[dict[str, Any]], figures: dict[str, str | None]
) -> str:
    """report.md: the answer first, then what to doubt, the evidence, the coefficients."""
    runs = evidence.runs
    lines = ["# Vocabulary-size prediction report", ""]
    if runs is not None:
        data = (
            f"Fitted on {runs['run'].nunique()} runs ({runs['non_vocab_params'].nunique()} model "
            f"shapes x {runs['vocab_size'].nunique()} vocabulary sizes from "
            f"{runs['vocab_size'].min():,.0f} to {runs['vocab_size'].max():,.0f}), "
            f"{len(runs)} evaluation checkpoints, compute {sci(runs['flops'].min())} to "
            f"{sci(runs['flops'].max())} FLOPs."
        )
    else:
        data = (
            f"The runs behind the coefficients are not part of this report ({evidence.runs_note})."
        )
    lines += [
        "Which vocabulary size V should each target model use, given its non-vocabulary "
        "parameters Nnv, its width d and its compute budget? Three estimators of Tao et al. 2024 "
        "(*Scaling Laws with Vocabulary*) answer from the runs: 1. IsoFLOPs (power laws on the "
        "lowest loss at each compute), 2. the derivative of the compute needed for a fixed text, "
        "3. a parametric loss L_u(Nnv, Nv, D). " + data,
        "",
        "Compute everywhere is the paper's convention **C = 6 (Nnv + V d) D** (D tokens; "
        "attention FLOPs are not counted). Losses are unigram-normalized, L_u = CE − unigram "
        "CE of the same tokens (0 for a model that only knows token frequencies; lower is "
        "better), so that models with different V are comparable.",
        "",
        *recommendation_markdown(evidence),
        *backtest_markdown(evidence, figures),
        "## The three approaches",
        "",
        *_predictions_markdown(evidence),
        "",
        *_comparison_markdown(evidence),
        *target_comparison_markdown(evidence),
        "## What to doubt",
        "",
        *_doubts_markdown(evidence, doubts),
        "",
        "## The evidence",
        "",
    ]
    for spec in FIGURES:
        if spec.inline:
            continue
        lines += [f"### {spec.title}", "", *figure_markdown(spec, figures)]
        if spec.section is not None:
            lines += spec.section(evidence)
    lines += ["## Coefficients", "", *_coefficients_markdown(evidence.estimates), ""]
    lines += ["## Inputs", ""]
    lines += [f"- {name}: `{value}`" for name, value in evidence.sources.items()]
    lines.append("")
    return "\n".join(lines)


HTML_STYLE = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; line-height: 1.45; color: #1f2328; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.88em; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; }
th { background: #f6f8fa; }
img { max-width: 100%; border: 1px solid #eee; }
code { background: #f6f8fa; padding: 1px 4px; border-radius: 4px; }
h2 { border-bottom: 1px solid #d0d7de; padding-bottom: 0.2em; margin-top: 1.6em; }
"""


def render_html(markdown_text: str, figures_dir: Path) -> str:
    """The Markdown rendered to one self-contained HTML page: every image inlined as a data URI
    so the file can be mailed or attached on its own."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown_text)

    def inline(match: re.Match) -> str:
        path = figures_dir / Path(html.unescape(match.group(1))).name
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f'src="data:image/png;base64,{data}"'

    body = re.sub(r'src="figures/([^"]+\.png)"', inline, body)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        "<title>vocabscale prediction report</title>\n"
        f"<style>{HTML_STYLE}</style>\n</head>\n<body>\n{body}</body>\n</html>\n"
    )


def summary_metrics(evidence: Evidence, doubts: list[dict[str, Any]]) -> dict[str, float | int]:
    """Flat numbers for `dvc metrics show` (which compares them across commits)."""
    summary: dict[str, float | int] = {"doubts": len(doubts)}
    for row in evidence.predictions.itertuples(index=False):
        key = f"{row.target}.{row.approach}"
        if pd.isna(row.vocab_size):  # no answer: no number
            continue
        summary[f"vocab_size.{key}"] = round(float(row.vocab_size), 1)
        summary[f"vocab_size_rounded.{key}"] = int(row.vocab_size_rounded)
        if row.approach == RECOMMENDED:
            for name in ("vocab_size_low", "vocab_size_high", "band_low", "band_high"):
                if not pd.isna(value := getattr(row, name)):
                    summary[f"{name}.{row.target}"] = round(float(value), 1)
    for approach, record in ((evidence.estimates.backtest or {}).get("approaches") or {}).items():
        if record.get("median_abs_ln_ratio") is not None:
            summary[f"backtest.median_abs_ln_ratio.{approach}"] = round(
                float(record["median_abs_ln_ratio"]), 4
            )
    for row in target_distances(evidence).itertuples(index=False):
        if np.isfinite(row.extrapolation):
            summary[f"extrapolation.{row.target}"] = float(f"{row.extrapolation:.4g}")
        if np.isfinite(row.disagreement):
            summary[f"disagreement.{row.target}"] = round(float(row.disagreement), 4)
    isoflops_fit, parametric_fit = evidence.fit("isoflops"), evidence.fit("parametric")
    isoflops = (isoflops_fit.quality.get("vocab_params") if isoflops_fit else None) or {}
    parametric = parametric_fit.quality if parametric_fit else {}
    for key, value in (
        ("r_squared.isoflops_vocab_params", isoflops.get("r_squared")),
        ("r_squared.parametric", parametric.get("r_squared")),
    ):
        if value is not None and np.isfinite(value):
            summary[key] = round(float(value), 5)
    if evidence.runs is not None:
        summary["runs"] = int(evidence.runs["run"].nunique())
        summary["checkpoints"] = len(evidence.runs)
    summary["diverged_rows"] = 0 if evidence.diverged is None else len(evidence.diverged)
    return summary


#: The columns of isoflops_envelope.csv.
ENVELOPE_COLUMNS = (
    "flops",
    "loss_u",
    "vocab_size",
    "vocab_params",
    "non_vocab_params",
    "d_model",
    "characters",
    "kind",
)


def envelope_points(evidence: Evidence) -> pd.DataFrame:
    """Approach 1's envelope points by compute, for `dvc plots show` (no rows if not fitted)."""
    try:
        envelope = isoflops_envelope(evidence)
    except Skipped:
        envelope = pd.DataFrame()
    return envelope.reindex(columns=list(ENVELOPE_COLUMNS))
