"""What to doubt: every finding in the data that should lower trust in the predictions.

Each kind of doubt is one check function, registered with `@check(kind, title, meaning)`: it
reads the Evidence and yields findings, `(message, target)` pairs (target None when the
finding concerns the whole fit). The report lists the kinds in the order they are registered
here, each with its title and meaning; `doubts.json` holds every finding. A new doubt is one
more function below.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from vocabscale.estimate.anchor import common_budget_range, vocab_losses_at_budget
from vocabscale.estimate.results import ApproachResult, Fit
from vocabscale.report.evidence import Evidence, target_distances, title
from vocabscale.report.numbers import human, sci, times
from vocabscale.runs.table import run_labels
from vocabscale.tokens_per_char import TOKENS_PER_CHAR_MAX_VOCAB

#: A finding: its message and the target it concerns (None: the whole fit).
Finding = tuple[str, str | None]

#: A fit explaining less of the variance than this is flagged.
WEAK_FIT_R_SQUARED = 0.9


@dataclass(frozen=True)
class Check:
    kind: str
    title: str
    meaning: str  # may name {far} and {apart}, the report's thresholds
    find: Callable[[Evidence], Iterator[Finding]]


CHECKS: list[Check] = []


def check(kind: str, title_text: str, meaning: str = "") -> Callable:
    """Register a check function under `kind`, in report order."""

    def register(find: Callable[[Evidence], Iterator[Finding]]) -> Callable:
        CHECKS.append(Check(kind, title_text, meaning, find))
        return find

    return register


def find_doubts(evidence: Evidence) -> list[dict[str, Any]]:
    """Every finding of every check: {kind, target, message}, in report order."""
    return [
        {"kind": registered.kind, "target": target, "message": message}
        for registered in CHECKS
        for message, target in registered.find(evidence)
    ]


def meaning_of(registered: Check, evidence: Evidence) -> str:
    settings = evidence.settings
    return registered.meaning.format(
        far=float(settings["extrapolation_warn"]),
        apart=float(settings["disagreement_warn"]),
        unreliable=float(settings["unreliable_share"]),
    )


# --- the checks, in report order -------------------------------------------------------------


@check("failed_approach", "An approach could not be fitted")
def failed_approaches(evidence: Evidence) -> Iterator[Finding]:
    for approach, error in evidence.estimates.failed.items():
        yield f"{title(approach)}: {error}", None


def excluded_counts(evidence: Evidence) -> dict[str, int]:
    """Rows excluded from the fits, by reason: the most any approach excluded, and at least
    the diverged rows of the runs table."""
    excluded: dict[str, int] = {}
    for result in evidence.estimates.approaches.values():
        for reason, count in (result.excluded_rows or {}).items():
            excluded[reason] = max(excluded.get(reason, 0), int(count))
    if evidence.diverged is not None and not evidence.diverged.empty:
        excluded["diverged"] = max(excluded.get("diverged", 0), len(evidence.diverged))
    return excluded


@check(
    "diverged",
    "Runs excluded as diverged",
    "The fits never saw these rows; if divergence is likelier at some V or size, the "
    "surviving runs are a biased sample.",
)
def diverged_runs(evidence: Evidence) -> Iterator[Finding]:
    """Counted in runs (a run that diverged before its first evaluation has a single row)."""
    count = excluded_counts(evidence).get("diverged")
    if not count:
        return
    rows = f"{count} row{'s' * (count != 1)} of the runs table"
    diverged = evidence.diverged
    if diverged is None or diverged.empty:
        yield f"{rows}.", None
        return
    runs = sorted(set(run_labels(diverged)))
    yield f"{len(runs)} run{'s' * (len(runs) != 1)} ({rows}): {', '.join(runs)}.", None


@check("excluded_rows", "Rows excluded from the fits")
def excluded_rows(evidence: Evidence) -> Iterator[Finding]:
    excluded = excluded_counts(evidence)
    for reason in ("non_finite", "non_positive", "repeated"):
        if excluded.get(reason):
            yield f"{excluded[reason]} {reason.replace('_', '-')} rows.", None


@check(
    "extrapolation",
    "Far extrapolation",
    "The target's budget is more than {far:g}x the largest compute fitted; the power laws "
    "are read that far beyond the data.",
)
def far_extrapolation(evidence: Evidence) -> Iterator[Finding]:
    far = float(evidence.settings["extrapolation_warn"])
    for row in target_distances(evidence).itertuples(index=False):
        if np.isfinite(row.extrapolation) and row.extrapolation > far:
            message = (
                f"**{row.target}**: {sci(row.flops)} FLOPs, {times(row.extrapolation)} the "
                "largest compute fitted."
            )
            yield message, row.target


@check(
    "disagreement",
    "The approaches disagree",
    "Their V differ by more than {apart:g}x. Each rests on different assumptions; none is "
    "known to be the right one here.",
)
def disagreement(evidence: Evidence) -> Iterator[Finding]:
    apart = float(evidence.settings["disagreement_warn"])
    for row in target_distances(evidence).itertuples(index=False):
        if np.isfinite(row.disagreement) and row.disagreement > apart:
            message = (
                f"**{row.target}**: {row.disagreement:.2f}x ({title(row.lowest)} lowest, "
                f"{title(row.highest)} highest)."
            )
            yield message, row.target


def on_bound_names(fit: Any) -> list[str]:
    """Every `on_bound` list in a fit-quality record, however nested."""
    found: list[str] = []
    if isinstance(fit, dict):
        for key, value in fit.items():
            if key == "on_bound" and isinstance(value, list):
                found += [str(v) for v in value]
            else:
                found += on_bound_names(value)
    return found


@check(
    "on_bound",
    "Fitted parameters on a bound",
    "The best fit lies at or beyond the allowed range, so the law was not freely fitted "
    "(a coefficient at 0 switches its term off).",
)
def parameters_on_bound(evidence: Evidence) -> Iterator[Finding]:
    for approach, result in evidence.estimates.approaches.items():
        true_tokens = (result.fit.detail("true_tokenization") or {}).get("fit")
        for fit, label in (
            (result.fit.detail("fit"), title(approach)),
            (true_tokens, f"{title(approach)} (true D)"),
        ):
            names = sorted(set(on_bound_names(fit)))
            if names:
                yield f"{label}: {', '.join(names)}.", None


def not_converged_names(fit: Any, path: str = "") -> list[str]:
    """Every fit record under `fit` whose `converged` is false, by where it sits."""
    found: list[str] = []
    if isinstance(fit, dict):
        if fit.get("converged") is False:
            found.append(path or "the fit")
        for key, value in fit.items():
            if isinstance(value, dict):
                found += not_converged_names(value, f"{path} {key}".strip())
    return found


def fitted_with_methods(evidence: Evidence) -> Iterator[tuple[str, Fit]]:
    """(label, fit) of every approach, and of its other method when one was fitted."""
    for approach, result in evidence.estimates.approaches.items():
        yield title(approach), result.fit
        other = result.other_method
        if isinstance(other, ApproachResult):
            yield f"{title(approach)} ({other.method} method)", other.fit


@check(
    "not_converged",
    "A fit did not converge",
    "The optimiser stopped before its tolerance was met: the coefficients are where it "
    "stopped, not a minimum.",
)
def fits_not_converged(evidence: Evidence) -> Iterator[Finding]:
    for label, fit in fitted_with_methods(evidence):
        records = {
            "fit": fit.detail("fit"),
            "gamma fit": (fit.detail("exponent_fit") or {}).get("fit"),
            "true D": (fit.detail("true_tokenization") or {}).get("fit"),
        }
        names = [n for key, record in records.items() for n in not_converged_names(record, key)]
        if names:
            yield f"{label}: {', '.join(names)}.", None


@check(
    "derivative_bound",
    "Approach 2's solutions at the end of the V searched",
    "dC/dV = 0 has no root below f(V)'s clamp for these Nnv (f does not bend enough, e.g. a "
    "line fitted on two vocabularies): V sits at the search bound and gamma measures nothing.",
)
def derivative_at_bound(evidence: Evidence) -> Iterator[Finding]:
    for label, fit in fitted_with_methods(evidence):
        exponent = fit.detail("exponent_fit") or {}
        if exponent.get("solutions_at_search_bound"):
            at_bound = [s for s in exponent.get("solutions") or [] if s.get("at_search_bound")]
            where = ", ".join(f"{human(s['nnv'])} -> V = {s['vocab_size']:,.0f}" for s in at_bound)
            yield (
                f"{label}: {len(at_bound)} of {len(exponent.get('solutions') or [])} "
                f"(Nnv {where}); gamma = {fit.coefficients['gamma']:.3g}.",
                None,
            )


@check(
    "unreliable_interval",
    "Intervals that left out many refits",
    "More than {unreliable:.0%} of the bootstrap refits behind these intervals ended on a "
    "bound or at a search edge (or failed) and were left out: the interval describes the "
    "refits that did not collapse, not the estimator.",
)
def unreliable_intervals(evidence: Evidence) -> Iterator[Finding]:
    share = float(evidence.settings["unreliable_share"])
    predictions = evidence.predictions
    if "refits_excluded_share" not in predictions:
        return
    answered = predictions["vocab_size"].notna() & (predictions["refits_excluded_share"] > share)
    for row in predictions[answered].itertuples(index=False):
        yield (
            f"**{row.target}**: {title(row.approach)}, {row.refits_excluded_share:.0%} of "
            f"{row.refits} refits left out.",
            row.target,
        )


@check(
    "weak_identification",
    "Approach 3 weakly identified",
    "A parameter's 90% interval (from the curvature of the fit) spans more than 2x or "
    "crosses 0, or alpha2 exceeds 1 (a vocabulary term falling faster than 1/Nv): the data "
    "leave the law free along a nearly flat objective, and its optimum V with it.",
)
def weak_identification(evidence: Evidence) -> Iterator[Finding]:
    for label, fit in fitted_with_methods(evidence):
        quality = fit.detail("fit") or {}
        if "identification" not in quality:
            continue
        weak = quality["identification"].get("weak") or []
        intervals = quality["identification"].get("intervals") or {}
        parts = [
            f"{name} in [{intervals[name][0]:.3g}, {intervals[name][1]:.3g}]"
            if name in intervals
            else f"{name} (no curvature)"
            for name in weak
        ]
        if fit.coefficient("alpha2", 0) > 1:
            parts.append(f"alpha2 = {fit.coefficients['alpha2']:.3g} > 1")
        if parts:
            yield f"{label}: {'; '.join(parts)}.", None


@check(
    "no_answer",
    "Approaches that give no answer",
    "A fit that ended on a parameter bound, or whose optimum lies at the edge of the V it "
    "searched, says only 'this small or smaller' or 'this large or larger': it gives no V, "
    "and the recommendation is made without it.",
)
def no_answers(evidence: Evidence) -> Iterator[Finding]:
    predictions = evidence.predictions
    missing = predictions[predictions["vocab_size"].isna() & (predictions["reason"] != "")]
    for row in missing.itertuples(index=False):
        yield f"**{row.target}**: {title(row.approach)}: {row.reason}.", row.target


@check("compatibility_switch", "Approach 3 fitted with the authors' compatibility switch")
def compatibility_switch(evidence: Evidence) -> Iterator[Finding]:
    parametric = evidence.fit("parametric")
    if parametric is not None and parametric.options.get("authors_tokenization"):
        yield (
            (
                "Token counts in the fit were H f(V/1000), as in the published code, while "
                "predictions use true token counts. The table also shows approach 3 fitted with "
                "true token counts ('Parametric (true D)'); trust that one unless you are "
                "reproducing the paper."
            ),
            None,
        )


def best_vocab_at_common_budget(model: pd.DataFrame) -> tuple[float, list[float]] | None:
    """The V with the lowest L_u at the largest budget every run of one model reaches."""
    low, high = common_budget_range(model)
    if high < low:
        return None
    table = vocab_losses_at_budget(model, high)
    best = table.loc[table["loss_u"].idxmin(), "vocab_size"]
    return float(best), table["vocab_size"].tolist()


@check(
    "sweep_edge",
    "Optimum at the edge of the V sweep",
    "The best trained vocabulary is the smallest or largest one tried; the optimum may lie "
    "outside the sweep. Extend the sweep on that side.",
)
def sweep_edge(evidence: Evidence) -> Iterator[Finding]:
    """Models whose best trained V (at a budget all their runs reach) is the sweep's edge, and
    the derivative anchor if it is one."""
    runs = evidence.runs
    if runs is not None and not runs.empty:
        for nnv, model in runs.groupby("non_vocab_params"):
            found = best_vocab_at_common_budget(model)
            if found is None or len(found[1]) < 3:
                continue
            best, sweep = found
            if best in (sweep[0], sweep[-1]):
                side = "smallest" if best == sweep[0] else "largest"
                yield (
                    (
                        f"Nnv = {human(nnv)}: V = {best:,.0f}, the {side} trained, has the lowest "
                        "L_u at the largest budget all its runs reach."
                    ),
                    None,
                )
    derivative = evidence.fit("derivative")
    anchor = (derivative.coefficient("anchor") if derivative else None) or {}
    swept = [row["vocab_size"] for row in anchor.get("losses") or []]
    best = anchor.get("best_swept_vocab_size", anchor.get("vocab_size"))
    if len(swept) >= 3 and best in (min(swept), max(swept)):
        yield (
            (
                f"Derivative: the best swept V at its anchor budget, V = {best:,.0f}, is at "
                "the edge, so the whole approach-2 curve may be shifted."
            ),
            None,
        )


@check(
    "anchor",
    "Approach 2's anchor is uncertain",
    "The anchor V is where L_u of the smallest model is least at the anchor budget; read "
    "outside the swept V, without a minimum, from runs extrapolated to the budget, or at a "
    "budget that is not the model's compute-optimal one, it moves the whole approach-2 curve.",
)
def anchor_doubts(evidence: Evidence) -> Iterator[Finding]:
    for label, fit in fitted_with_methods(evidence):
        anchor = fit.coefficient("anchor") or {}
        yield from anchor_budget_doubts(label, anchor)
        if anchor.get("no_vertex"):
            yield (
                f"{label}: L_u over ln V has no minimum near the best swept V at the anchor "
                f"budget; the anchor is the best swept V, {anchor['vocab_size']:,.0f}.",
                None,
            )
        elif anchor.get("outside_sweep"):
            yield (
                f"{label}: the vertex, V = {anchor['vocab_size']:,.0f}, lies outside the swept "
                "V: it is extrapolated. Extend the sweep on that side.",
                None,
            )
        if anchor.get("extrapolated"):
            yield (
                f"{label}: the anchor budget, {sci(anchor.get('flops'))} FLOPs, lies beyond "
                "some runs of the smallest model: their L_u there is extrapolated.",
                None,
            )


def anchor_budget_doubts(label: str, anchor: dict[str, Any]) -> Iterator[Finding]:
    """The anchor read away from its model's compute-optimal budget: held to the runs' range,
    or approach 1 could not give that budget."""
    clamped = anchor.get("budget_clamped")
    if clamped:
        low, high = anchor.get("budget_range") or (math.nan, math.nan)
        yield (
            f"{label}: approach 1 puts the smallest model's compute-optimal budget at "
            f"{sci(anchor['compute_optimal_flops'])} FLOPs, {clamped} the range every run of it "
            f"reaches ({sci(low)} to {sci(high)}); the anchor is read at {sci(anchor['flops'])}, "
            "the nearest budget they all reach, so its V is the best at a budget that is not "
            f"compute-optimal ({'smaller' if clamped == 'above' else 'larger'} than the optimum "
            "there when V grows with compute, as it does).",
            None,
        )
    if anchor.get("compute_optimal_unavailable"):
        yield (
            f"{label}: approach 1 could not be fitted ({anchor['compute_optimal_unavailable']}), "
            f"so the anchor is read at {sci(anchor.get('flops'))} FLOPs, the largest budget every "
            "run of the smallest model reaches, not at its compute-optimal budget.",
            None,
        )


#: Models whose longest runs were trained to tokens-per-parameter ratios within this factor of
#: each other follow one training design (docs/design.md, "Intervals").
DESIGN_RATIO_SPREAD = 2.0


def design_line(runs: pd.DataFrame) -> tuple[pd.Series, float] | None:
    """Per model, the tokens per non-vocabulary parameter of its longest runs, and K of the line
    Nnv = e^K C^0.5 through each model's largest budget (the median over its runs); None unless
    at least 3 models share one ratio within DESIGN_RATIO_SPREAD."""
    longest = runs.groupby("non_vocab_params")["tokens"].max()
    ratios = longest / longest.index.to_numpy(float)
    if len(ratios) < 3 or ratios.max() > DESIGN_RATIO_SPREAD * ratios.min():
        return None
    top = runs.groupby(["non_vocab_params", "run"])["flops"].max().groupby(level=0).median()
    k = float(np.mean(np.log(top.index.to_numpy(float)) - 0.5 * np.log(top.to_numpy(float))))
    return ratios, k


@check(
    "design_sets_k1",
    "The sweep's design sets approach 1's compute-optimal relation",
    "Every model was trained to about the same number of tokens per parameter, so each model's "
    "last checkpoints lie on one line Nnv ∝ C^0.5 that the design fixes, not the loss, and the "
    "IsoFLOPs envelope follows it (on the paper's grid K1 moved 0.2 when the law's moved 1.0; "
    'docs/design.md, "Intervals"). Approach 1: its compute-optimal budget C = (Nnv / '
    "e^K1)^2 and the V it reads there are the design's. Approach 2 reads its anchor at the "
    "smallest model's budget on that relation, and approach 3 answers at each target's budget "
    "on it. Several model sizes at each of several budgets (an IsoFLOPs design) measure it.",
)
def design_sets_k1(evidence: Evidence) -> Iterator[Finding]:
    isoflops = evidence.fit("isoflops")
    if evidence.runs is None or evidence.runs.empty or isoflops is None:
        return
    found = design_line(evidence.runs)
    if found is None:
        return
    ratios, k = found
    message = (
        f"{len(ratios)} models trained to {ratios.min():.3g} to {ratios.max():.3g} tokens per "
        f"parameter: the line through their longest runs has K = {k:.3f}; approach 1's "
        f"K1 = {isoflops.coefficients['K1']:.3f}"
    )
    derivative = evidence.fit("derivative")
    anchor = (derivative.coefficient("anchor") if derivative else None) or {}
    if anchor.get("budget_rule") == "compute_optimal":
        message += (
            f"; approach 2's anchor is read at {sci(anchor['flops'])} FLOPs, the smallest "
            "model's compute-optimal budget under it"
        )
    yield message + ".", None


@check("tokenization", "f(V) used where it was not measured")
def tokenization(evidence: Evidence) -> Iterator[Finding]:
    """f(V) clamped at its vertex, not positive, or read beyond the largest V measured."""
    f = evidence.tokens_per_char
    if f is None or evidence.predictions.empty:
        return
    largest = float(np.nanmax(evidence.predictions["vocab_size"].to_numpy(float)))
    if f.clamped_at_vertex and largest > f.max_vocab:
        yield (
            (
                f"The fitted f(V) has its minimum at V = {f.max_vocab:,.0f}, below "
                f"{TOKENS_PER_CHAR_MAX_VOCAB:,}; larger vocabularies do not make text longer, "
                f"so f is held constant beyond it, but predictions reach V = {largest:,.0f}, "
                "where f (and the derivative approach, and token counts) is not known. Measure "
                "larger vocabularies."
            ),
            None,
        )
    if f(min(largest, f.max_vocab)) <= 0:
        yield (
            f"The fitted f(V) is not positive at V = {largest:,.0f}: it cannot be used there.",
            None,
        )
    points = evidence.tokenization_points
    if points is not None and not points.empty:
        measured = float(points["vocab_size"].max())
        if largest > measured:
            yield (
                (
                    f"Predictions reach V = {largest:,.0f}, {largest / measured:.3g}x the "
                    f"largest tokenizer measured (V = {measured:,.0f}); f(V) is extrapolated "
                    "there."
                ),
                None,
            )


@check("weak_fit", "Weak fit", "See approach 3's residuals for where it misses.")
def weak_fit(evidence: Evidence) -> Iterator[Finding]:
    # Only the loss fit: approach 1's R² on the envelope is low even on clean data (the
    # envelope hops between the discrete V of the sweep); its bootstrap interval says more.
    parametric = evidence.fit("parametric")
    r_squared = None if parametric is None else parametric.quality.get("r_squared")
    if r_squared is not None and np.isfinite(r_squared) and r_squared < WEAK_FIT_R_SQUARED:
        yield (
            (
                f"Parametric: the loss law explains R² = {r_squared:.2f} of the variance of L_u "
                f"(below {WEAK_FIT_R_SQUARED})."
            ),
            None,
        )


@check("no_intervals", "No intervals")
def no_intervals(evidence: Evidence) -> Iterator[Finding]:
    for approach, result in evidence.estimates.approaches.items():
        if result.bootstrap is not None and len(result.refits) < 2:
            yield (
                (
                    f"{title(approach)}: fewer than two bootstrap refits succeeded, so its "
                    "predictions have no interval."
                ),
                None,
            )
