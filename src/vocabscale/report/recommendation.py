"""The report's first two sections: the V to use for each target (the recommendation, its
interval and flat band), and how well each approach predicted the user's own held-out runs
(the backtest that chose the rule). Markdown only; everything was computed before."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from vocabscale.estimate.predict import RECOMMENDED, band_tolerance, rule_of
from vocabscale.report.contents import FIGURES, figure_markdown
from vocabscale.report.evidence import Evidence, title
from vocabscale.report.numbers import human, range_text, sci

BACKTEST_FIGURE = next(spec for spec in FIGURES if spec.name == "backtest")
#: What the backtest table calls its columns' quantities.
ERROR_TEXT = "predicted / the runs' best V"


def factor_text(ln_ratio: float) -> str:
    """An ln ratio as the factor it is: 1.12x, 0.80x."""
    return "n/a" if pd.isna(ln_ratio) else f"{math.exp(ln_ratio):.2f}x"


def recommendation_line(row: Any, round_to: int, tolerance: float | None) -> str:
    head = (
        f"- **{row.target}** (Nnv {human(row.nnv)}, d {int(row.d_model)}, "
        f"C {sci(row.flops)} FLOPs): "
    )
    if pd.isna(row.vocab_size):
        return head + f"no recommendation: {row.reason}."
    interval = range_text(row.vocab_size_low, row.vocab_size_high)
    text = head + f"**V = {int(row.vocab_size_rounded):,}** ({row.vocab_size:,.0f} before "
    text += f"rounding to a multiple of {round_to}); interval {interval}"
    if not pd.isna(row.band_low):
        text += (
            f"; flat band **{int(row.band_low):,} – {int(row.band_high):,}**: every V in it is "
            f"predicted within {tolerance:.2g} nats of the best L_u"
        )
    return text + "."


def recommendation_markdown(evidence: Evidence) -> list[str]:
    """## What V to use: one line per target, then how the answer was made."""
    table = evidence.predictions
    rows = table[table["approach"] == RECOMMENDED]
    tolerance = evidence.settings["band_tolerance"] or band_tolerance(evidence.estimates)
    rule = rule_of(evidence.estimates)
    lines = ["## What V to use", ""]
    lines += [
        recommendation_line(r, evidence.settings["round_to"], tolerance) for r in rows.itertuples()
    ]
    lines += [
        "",
        f"**How.** The recommendation is {rule.text}; only answers for the target's budget "
        "count (approaches 1 and 2 answer for the compute-optimal budget, approach 3 for any).",
    ]
    level = f"{evidence.confidence:.0%}"
    if rule.error is not None:
        lines.append(
            f"Its {level} interval is the mixture of the weighted approaches' bootstrap "
            "intervals (their disagreement is in it), widened by the error the "
            f"backtest measured on runs the fits did not see (an RMS of {rule.error:.3f} in ln V, "
            f"net of the held-out runs' own noise, at {rule.distance:.1f} e-folds of compute from "
            "the middle of the compute fitted), grown in proportion where a target lies farther "
            "than that: it covers noise and, as far as the backtest could measure it, a law that "
            "does not quite hold."
        )
    else:
        lines.append(
            f"Its {level} interval covers the runs' noise and the approaches' disagreement "
            "only: no comparison with held-out runs measured how far their laws miss on runs "
            "they did not see."
        )
    if tolerance:
        lines.append(
            "**The flat band** holds every V whose predicted L_u is within "
            f"{tolerance:.2g} nats of the optimum's (the seed-to-seed spread of L_u the runs "
            "show, else their checkpoint noise where they show no more, unless "
            "`report.band_tolerance` says otherwise), from the shape of approach "
            "3's loss around the recommendation (else the curvature of the largest model's "
            "runs), rounded inwards to multiples of "
            f"{evidence.settings['round_to']}: near the optimum the loss is flat, so any V in "
            "the band is as good as the vertex within the noise; pick the one that suits the "
            "hardware."
        )
    return [*lines, ""]


def summary_rows(summary: dict[str, Any], weights: dict[str, float] | None) -> list[str]:
    lines = [
        f"| approach | compared | median {ERROR_TEXT} | within its interval | no answer | weight |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for approach, record in summary.items():
        median = record.get("median_abs_ln_ratio")
        weight = "" if approach == RECOMMENDED else f"{(weights or {}).get(approach, 0.0):.0%}"
        covered, none = record.get("covered_share"), record.get("no_answer_share")
        lines.append(
            f"| {title(approach)} | {record['comparisons']} | "
            f"{'n/a' if median is None else 'within ' + factor_text(median)} | "
            f"{'n/a' if covered is None else f'{covered:.0%}'} | "
            f"{'n/a' if none is None else f'{none:.0%}'} | {weight} |"
        )
    return lines


def comparison_rows(table: pd.DataFrame) -> list[str]:
    lines = [
        "| held out | model | C (FLOPs) | approach | predicted V | interval | runs' best V | "
        "interval | ratio | covered |",
        "|---|---|--:|---|--:|--:|--:|--:|--:|:-:|",
    ]
    for row in table.itertuples(index=False):
        if pd.isna(row.vocab_size):
            predicted, interval = (
                f"no answer: {row.reason}" if isinstance(row.reason, str) else "no answer",
                "",
            )
        else:
            predicted = f"{row.vocab_size:,.0f}"
            interval = range_text(
                getattr(row, "vocab_size_low", np.nan), getattr(row, "vocab_size_high", np.nan)
            )
        truth = "n/a" if pd.isna(row.empirical_vocab_size) else f"{row.empirical_vocab_size:,.0f}"
        if isinstance(getattr(row, "empirical_problem", None), str):
            truth += " (not a truth: " + row.empirical_problem + ")"
        covered = {True: "yes", False: "no"}.get(getattr(row, "covered", None), "")
        ratio = factor_text(getattr(row, "ln_ratio", np.nan))
        lines.append(
            f"| {row.held_out} | {row.model} | {sci(row.flops)} | {title(row.approach)} | "
            f"{predicted} | {interval} | {truth} | "
            f"{range_text(row.empirical_low, row.empirical_high)} | {ratio} | {covered} |"
        )
    return lines


def backtest_markdown(evidence: Evidence, figures: dict[str, str | None]) -> list[str]:
    """## How well each approach predicted your own largest runs: the summary per approach,
    then every comparison."""
    lines = ["## How well each approach predicted your own largest runs", ""]
    summary = evidence.estimates.backtest
    if evidence.backtest is None or summary is None:
        return [*lines, "No backtest was given (`vocabscale report --backtest DIR`).", ""]
    holdouts = summary.get("holdouts") or []
    if not holdouts:
        return [*lines, f"No backtest was possible: {rule_of(evidence.estimates).text}.", ""]
    described = "; ".join(
        f"{h['name']} held out" if h["kind"] == "model" else f"fitted on {h['name']}"
        for h in holdouts
    )
    lines += [
        "Every approach was fitted again without some of the runs and asked what they would "
        f"show ({described}). The truth is the held-out runs' own best V: each run's L_u read at "
        "the budget, and the vertex of a quadratic in ln V through the swept V near the best; "
        "its interval is the runs' noise. Approach 3 is compared at several budgets the "
        "held-out runs all reach, approaches 1 and 2 at the compute-optimal budget their fit "
        "implies, when the held-out runs reach it. *Within its interval*: the share of "
        "comparisons whose truth lies in the approach's interval; *weight*: the approach's "
        "share in the recommendation.",
        "",
        *summary_rows(summary.get("approaches") or {}, rule_of(evidence.estimates).weights),
        "",
        *figure_markdown(BACKTEST_FIGURE, figures),
        *comparison_rows(evidence.backtest),
        "",
    ]
    return lines
