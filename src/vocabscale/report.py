"""Stage report: the vocabulary size each approach recommends for each target, the evidence
behind it, and what to doubt.

Runs on any estimates directory (the three approaches' JSON files) or on one coefficients.json
from `vocabscale estimate`, so a report can be rebuilt from results pulled with DVC or fitted on
another team's runs table. The runs table and the tokenizers' f(V) measurements are optional:
figures that need them are replaced by a sentence saying so.

Outputs (written atomically as one directory): report.md and report.html (the same content,
the HTML self-contained with its images inline), figures/*.png, predictions.csv, doubts.json,
summary.json (flat numbers for `dvc metrics show`), isoflops_envelope.csv (the envelope's
points for `dvc plots show`) and coefficients.json (what the predictions came from, usable with
`vocabscale predict --coefficients`).
"""

from __future__ import annotations

import base64
import html
import logging
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vocabscale.accounting import MIN_VOCAB_SIZE, TOKENS_PER_CHAR_MAX_VOCAB, width_for_nnv
from vocabscale.estimate import predictions_table
from vocabscale.estimators.derivative import common_budget_range, vocab_losses_at_budget
from vocabscale.estimators.runs import RunsTableError, prepare_runs, tokens_per_char_from_table
from vocabscale.figures import (
    FIGURES,
    TITLES,
    Evidence,
    Skipped,
    draw_figures,
    human,
    isoflops_envelope,
    tokens_per_char_of,
)
from vocabscale.io import atomic_dir, read_json, to_json, write_csv, write_json
from vocabscale.predict import APPROACHES, PAPER_COEFFICIENTS, load_coefficients, predict

log = logging.getLogger(__name__)

#: Well-known public models for the Nv-against-Nnv figure. Nnv counts every parameter but the
#: input embedding and the output projection, computed from each model's published
#: configuration (layers, width, FFN width, attention heads and KV heads); V is the size of the
#: published tokenizer's embedding matrix. `report.public_models` in params replaces this list.
PUBLIC_MODELS: tuple[dict[str, Any], ...] = (
    {"name": "GPT-2 XL", "nnv": 1.476e9, "d_model": 1600, "vocab_size": 50257},
    {"name": "Llama 2 7B", "nnv": 6.476e9, "d_model": 4096, "vocab_size": 32000},
    {"name": "Mistral 7B", "nnv": 6.980e9, "d_model": 4096, "vocab_size": 32000},
    {"name": "Qwen2 7B", "nnv": 6.525e9, "d_model": 3584, "vocab_size": 152064},
    {"name": "Llama 3 8B", "nnv": 6.980e9, "d_model": 4096, "vocab_size": 128256},
    {"name": "Gemma 7B", "nnv": 7.751e9, "d_model": 3072, "vocab_size": 256000},
    {"name": "Llama 2 13B", "nnv": 12.688e9, "d_model": 5120, "vocab_size": 32000},
    {"name": "Llama 2 70B", "nnv": 68.452e9, "d_model": 8192, "vocab_size": 32000},
    {"name": "Llama 3 70B", "nnv": 68.452e9, "d_model": 8192, "vocab_size": 128256},
    {"name": "GPT-3 175B", "nnv": 173.95e9, "d_model": 12288, "vocab_size": 50257},
    {"name": "BLOOM 176B", "nnv": 172.64e9, "d_model": 14336, "vocab_size": 250880},
)

#: A fit explaining less of the variance than this is flagged.
WEAK_FIT_R_SQUARED = 0.9


def round_to_multiple(value: float, multiple: int) -> int:
    """V rounded to a multiple that suits the hardware (embedding shards, tensor cores), never
    below the smallest vocabulary a byte-level BPE can have."""
    smallest = multiple * math.ceil(MIN_VOCAB_SIZE / multiple)
    return int(max(smallest, multiple * round(value / multiple)))


# --- inputs ----------------------------------------------------------------------------------


def load_runs_for_report(
    path: str | Path | None, coefficients: dict[str, Any]
) -> tuple[pd.DataFrame | None, pd.DataFrame | None, str]:
    """(usable rows, rows excluded as diverged, note). A table that cannot be read is reported
    and left out: the report still builds from the coefficients alone."""
    if path is None:
        return None, None, "no runs table was given"
    try:
        raw = pd.read_csv(path)
        runs = prepare_runs(raw, tokens_per_char_of(coefficients), str(path))
    except (OSError, RunsTableError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        log.warning("report: leaving the runs table out: %s", error)
        return None, None, f"the runs table could not be used: {error}"
    diverged = None
    if "diverged" in raw.columns:
        flag = raw["diverged"].astype(str).str.lower().isin(["true", "1", "yes"])
        diverged = raw[flag].copy()
        for column in ("flops", "loss_u"):
            diverged[column] = pd.to_numeric(diverged.get(column), errors="coerce")
    return runs.frame, diverged, str(path)


def load_tokenization_points(
    path: str | Path | None, runs: pd.DataFrame | None
) -> tuple[pd.DataFrame | None, str]:
    """Measured tokens per character: the fit-tokenization output, else the runs table."""
    if path is not None:
        data = read_json(path)
        points = pd.DataFrame(data.get("points") or [])
        if {"vocab_size", "tokens_per_character"} <= set(points.columns):
            return points[["vocab_size", "tokens_per_character"]], "tokenizers' training split"
        log.warning("report: %s has no measured points; using the runs table", path)
    if runs is not None:
        measured = tokens_per_char_from_table(runs)
        if measured is not None:
            frame = pd.DataFrame({"vocab_size": measured[0], "tokens_per_character": measured[1]})
            return frame, "runs table"
    return None, ""


def resolve_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {**t, "d_model": t.get("d_model") or width_for_nnv(t["nnv"])} for t in report["targets"]
    ]


# --- predictions -----------------------------------------------------------------------------


def _confidence(coefficients: dict[str, Any]) -> float:
    for approach in APPROACHES:
        fitted = coefficients.get(approach) or {}
        if "bootstrap_confidence" in fitted:
            return float(fitted["bootstrap_confidence"])
    return 0.9


def _table_for_target(coefficients: dict[str, Any], target: dict, confidence: float):
    """predictions_table for one target; without a budget for approach 3 (no approach 1 and
    no `flops` given), the other approaches still answer."""
    try:
        return predictions_table(coefficients, [target], confidence)
    except ValueError as error:
        log.warning("report: %s: %s", target["name"], error)
        reduced = {k: v for k, v in coefficients.items() if k != "parametric"}
        return predictions_table(reduced, [target], confidence)


def build_predictions(
    coefficients: dict[str, Any], targets: list[dict[str, Any]], round_to: int
) -> pd.DataFrame:
    """One row per target and approach: V and Nv with bootstrap intervals, the published-
    coefficient V beside it, V rounded, and whether approach 3 hit its search bound. With the
    compatibility switch on, approach 3 fitted with true token counts gets rows of its own."""
    confidence = _confidence(coefficients)
    tables = [_table_for_target(coefficients, t, confidence) for t in targets]
    fitted = coefficients.get("parametric") or {}
    if fitted.get("true_tokenization"):
        alternative = {
            **coefficients,
            "parametric": {**fitted, **fitted["true_tokenization"], "bootstrap": []},
        }
        for target in targets:
            rows = _table_for_target(alternative, target, confidence)
            rows = rows[rows["approach"] == "parametric"].assign(approach="parametric_true_tokens")
            tables.append(rows)
    table = pd.concat(tables, ignore_index=True)
    if table.empty:
        raise ValueError("no approach answered for any target")
    order = {name: i for i, name in enumerate([*APPROACHES, "parametric_true_tokens"])}
    names = {t["name"]: i for i, t in enumerate(targets)}
    table = table.sort_values(
        ["target", "approach"], key=lambda c: c.map(names if c.name == "target" else order)
    ).reset_index(drop=True)
    paper = predictions_table(PAPER_COEFFICIENTS, targets).rename(
        columns={"vocab_size": "paper_vocab_size", "vocab_params": "paper_vocab_params"}
    )
    table = table.merge(
        paper[["target", "approach", "paper_vocab_size", "paper_vocab_params"]],
        on=["target", "approach"],
        how="left",
    )
    true_rows = table["approach"] == "parametric_true_tokens"
    if true_rows.any():  # the published value of approach 3 is the one to compare with
        published = paper[paper["approach"] == "parametric"].set_index("target")
        for column in ("paper_vocab_size", "paper_vocab_params"):
            table.loc[true_rows, column] = table.loc[true_rows, "target"].map(published[column])
    table["vocab_params_low"] = table["vocab_size_low"] * table["d_model"]
    table["vocab_params_high"] = table["vocab_size_high"] * table["d_model"]
    table["vocab_size_rounded"] = [round_to_multiple(v, round_to) for v in table["vocab_size"]]
    if "at_search_bound" not in table.columns:
        table["at_search_bound"] = [
            _at_search_bound(coefficients, row) for row in table.itertuples(index=False)
        ]
    table["at_search_bound"] = table["at_search_bound"].fillna(False).astype(bool)
    return table


def _at_search_bound(coefficients: dict[str, Any], row) -> bool:
    if not str(row.approach).startswith("parametric"):
        return False
    fitted = coefficients["parametric"]
    if row.approach == "parametric_true_tokens":
        fitted = {**fitted, **fitted["true_tokenization"]}
    answer = predict({**coefficients, "parametric": fitted}, row.nnv, row.d_model, row.flops)
    return bool(answer["approaches"].get("parametric", {}).get("at_search_bound", False))


# --- what to doubt ---------------------------------------------------------------------------


def _doubt(kind: str, message: str, target: str | None = None) -> dict[str, Any]:
    return {"kind": kind, "target": target, "message": message}


def largest_fitted_flops(evidence: Evidence) -> float | None:
    """The largest compute any approach was fitted on (the runs, else approach 1's range)."""
    candidates = []
    if evidence.runs is not None and not evidence.runs.empty:
        candidates.append(float(evidence.runs["flops"].max()))
    flops_range = (evidence.fitted("isoflops") or {}).get("flops_range")
    if flops_range:
        candidates.append(float(flops_range[1]))
    return max(candidates) if candidates else None


def target_distances(evidence: Evidence) -> pd.DataFrame:
    """Per target: its budget, how far beyond the data it is, and how far apart the three
    approaches land."""
    largest = largest_fitted_flops(evidence)
    rows = []
    for name, group in evidence.predictions.groupby("target", sort=False):
        main = group[group["approach"].isin(APPROACHES)]
        values = main.set_index("approach")["vocab_size"]
        flops = float(group["flops"].max())
        rows.append(
            {
                "target": name,
                "flops": flops,
                "extrapolation": flops / largest if largest else math.nan,
                "disagreement": float(values.max() / values.min()) if len(values) > 1 else math.nan,
                "lowest": values.idxmin() if len(values) > 1 else None,
                "highest": values.idxmax() if len(values) > 1 else None,
            }
        )
    return pd.DataFrame(rows)


def _on_bound(fit: Any) -> list[str]:
    """Every `on_bound` list in a fit-quality record, however nested."""
    found: list[str] = []
    if isinstance(fit, dict):
        for key, value in fit.items():
            if key == "on_bound" and isinstance(value, list):
                found += [str(v) for v in value]
            else:
                found += _on_bound(value)
    return found


def _best_vocab_at_common_budget(model: pd.DataFrame) -> tuple[float, list[float]] | None:
    """The V with the lowest L_u at the largest budget every run of one model reaches."""
    low, high = common_budget_range(model)
    if high < low:
        return None
    table = vocab_losses_at_budget(model, high)
    best = table.loc[table["loss_u"].idxmin(), "vocab_size"]
    return float(best), table["vocab_size"].tolist()


#: Every kind of doubt, in the order the report lists them: a title and what it means.
DOUBT_KINDS: dict[str, tuple[str, str]] = {
    "failed_approach": ("An approach could not be fitted", ""),
    "diverged": (
        "Runs excluded as diverged",
        "The fits never saw these rows; if divergence is likelier at some V or size, the "
        "surviving runs are a biased sample.",
    ),
    "excluded_rows": ("Rows excluded from the fits", ""),
    "extrapolation": (
        "Far extrapolation",
        "The target's budget is more than {far:g}x the largest compute fitted; the power laws "
        "are read that far beyond the data.",
    ),
    "disagreement": (
        "The approaches disagree",
        "Their V differ by more than {apart:g}x. Each rests on different assumptions; none is "
        "known to be the right one here.",
    ),
    "on_bound": (
        "Fitted parameters on a bound",
        "The best fit lies at or beyond the allowed range, so the law was not freely fitted "
        "(a coefficient at 0 switches its term off).",
    ),
    "search_bound": (
        "Approach 3's optimum at the edge of its search",
        "The fitted law has no optimum inside the V it searched: it only says 'this small or "
        "smaller' or 'this large or larger'.",
    ),
    "unstable": (
        "Estimate outside its own bootstrap interval",
        "Refits on resampled runs land elsewhere: the estimate hinges on a few runs.",
    ),
    "compatibility_switch": ("Approach 3 fitted with the authors' compatibility switch", ""),
    "sweep_edge": (
        "Optimum at the edge of the V sweep",
        "The best trained vocabulary is the smallest or largest one tried; the optimum may lie "
        "outside the sweep. Extend the sweep on that side.",
    ),
    "tokenization": ("f(V) used where it was not measured", ""),
    "weak_fit": ("Weak fit", "See approach 3's residuals for where it misses."),
    "no_intervals": ("No intervals", ""),
}


def find_doubts(evidence: Evidence, report: dict[str, Any]) -> list[dict[str, Any]]:
    """Everything in the data that should lower trust in the predictions: one record per
    finding ({kind, target, message}), kinds as in DOUBT_KINDS."""
    doubts = []
    coefficients = evidence.coefficients
    for approach, error in (coefficients.get("failed") or {}).items():
        doubts.append(_doubt("failed_approach", f"{TITLES[approach]}: {error}"))

    excluded: dict[str, int] = {}
    for approach in APPROACHES:
        for reason, count in ((evidence.fitted(approach) or {}).get("excluded_rows") or {}).items():
            excluded[reason] = max(excluded.get(reason, 0), int(count))
    diverged_runs = []
    if evidence.diverged is not None and not evidence.diverged.empty:
        if "run_id" in evidence.diverged.columns:
            diverged_runs = sorted(evidence.diverged["run_id"].astype(str).unique())
        excluded["diverged"] = max(excluded.get("diverged", 0), len(evidence.diverged))
    if excluded.get("diverged"):
        which = f" of runs {', '.join(diverged_runs)}" if diverged_runs else ""
        doubts.append(_doubt("diverged", f"{excluded['diverged']} checkpoint rows{which}."))
    for reason in ("non_finite", "non_positive"):
        if excluded.get(reason):
            doubts.append(
                _doubt("excluded_rows", f"{excluded[reason]} {reason.replace('_', '-')} rows.")
            )

    far = float(report.get("extrapolation_warn", 10.0))
    apart = float(report.get("disagreement_warn", 1.5))
    for row in target_distances(evidence).itertuples(index=False):
        if np.isfinite(row.extrapolation) and row.extrapolation > far:
            doubts.append(
                _doubt(
                    "extrapolation",
                    f"**{row.target}**: {_sci(row.flops)} FLOPs, {_times(row.extrapolation)} "
                    "the largest compute fitted.",
                    row.target,
                )
            )
        if np.isfinite(row.disagreement) and row.disagreement > apart:
            doubts.append(
                _doubt(
                    "disagreement",
                    f"**{row.target}**: {row.disagreement:.2f}x ({TITLES[row.lowest]} lowest, "
                    f"{TITLES[row.highest]} highest).",
                    row.target,
                )
            )

    for approach in APPROACHES:
        fitted = evidence.fitted(approach) or {}
        for fit, label in (
            (fitted.get("fit"), TITLES[approach]),
            ((fitted.get("true_tokenization") or {}).get("fit"), f"{TITLES[approach]} (true D)"),
        ):
            names = sorted(set(_on_bound(fit)))
            if names:
                doubts.append(_doubt("on_bound", f"{label}: {', '.join(names)}."))

    at_bound = evidence.predictions[evidence.predictions["at_search_bound"].astype(bool)]
    for row in at_bound.itertuples(index=False):
        doubts.append(
            _doubt(
                "search_bound",
                f"**{row.target}**: {TITLES[row.approach]} V = {row.vocab_size:,.0f}.",
                row.target,
            )
        )

    predictions = evidence.predictions
    outside = (predictions["vocab_size"] < 0.99 * predictions["vocab_size_low"]) | (
        predictions["vocab_size"] > 1.01 * predictions["vocab_size_high"]
    )
    for row in predictions[outside].itertuples(index=False):
        doubts.append(
            _doubt(
                "unstable",
                f"**{row.target}**: {TITLES[row.approach]} V = {row.vocab_size:,.0f}, interval "
                f"{_range(row.vocab_size_low, row.vocab_size_high)}.",
                row.target,
            )
        )

    parametric = evidence.fitted("parametric") or {}
    if (parametric.get("options") or {}).get("authors_tokenization"):
        doubts.append(
            _doubt(
                "compatibility_switch",
                "Token counts in the fit were H f(V/1000), as in the published code, while "
                "predictions use true token counts. The table also shows approach 3 fitted with "
                "true token counts ('Parametric (true D)'); trust that one unless you are "
                "reproducing the paper.",
            )
        )

    doubts += _sweep_edge_doubts(evidence)
    doubts += _tokenization_doubts(evidence, far)

    # Only the loss fit: approach 1's R² on the envelope is low even on clean data (the
    # envelope hops between the discrete V of the sweep); its bootstrap interval says more.
    r_squared = ((evidence.fitted("parametric") or {}).get("fit") or {}).get("r_squared")
    if r_squared is not None and np.isfinite(r_squared) and r_squared < WEAK_FIT_R_SQUARED:
        doubts.append(
            _doubt(
                "weak_fit",
                f"Parametric: the loss law explains R² = {r_squared:.2f} of the variance of L_u "
                f"(below {WEAK_FIT_R_SQUARED}).",
            )
        )
    for approach in APPROACHES:
        fitted = evidence.fitted(approach)
        if fitted is not None and "bootstrap" in fitted and len(fitted["bootstrap"]) < 2:
            doubts.append(
                _doubt(
                    "no_intervals",
                    f"{TITLES[approach]}: fewer than two bootstrap refits succeeded, so its "
                    "predictions have no interval.",
                )
            )
    return doubts


def _sweep_edge_doubts(evidence: Evidence) -> list[dict[str, Any]]:
    """Models whose best trained V (at a budget all their runs reach) is the sweep's edge, and
    the derivative anchor if it is one."""
    doubts = []
    runs = evidence.runs
    if runs is not None and not runs.empty:
        for nnv, model in runs.groupby("non_vocab_params"):
            found = _best_vocab_at_common_budget(model)
            if found is None or len(found[1]) < 3:
                continue
            best, sweep = found
            if best in (sweep[0], sweep[-1]):
                side = "smallest" if best == sweep[0] else "largest"
                doubts.append(
                    _doubt(
                        "sweep_edge",
                        f"Nnv = {human(nnv)}: V = {best:,.0f}, the {side} trained, has the lowest "
                        "L_u at the largest budget all its runs reach.",
                    )
                )
    anchor = (evidence.fitted("derivative") or {}).get("anchor") or {}
    swept = [row["vocab_size"] for row in anchor.get("losses") or []]
    if len(swept) >= 3 and anchor.get("vocab_size") in (min(swept), max(swept)):
        doubts.append(
            _doubt(
                "sweep_edge",
                f"Derivative: its anchor, V = {anchor['vocab_size']:,.0f}, is at the edge, so "
                "the whole approach-2 curve may be shifted.",
            )
        )
    return doubts


def _tokenization_doubts(evidence: Evidence, far: float) -> list[dict[str, Any]]:
    """f(V) read where it was not measured, or where the quadratic turns the wrong way."""
    f = evidence.tokens_per_char
    if f is None or evidence.predictions.empty:
        return []
    doubts = []
    largest = float(np.nanmax(evidence.predictions["vocab_size"].to_numpy(float)))
    if f.a > 0:
        vertex = math.exp(-f.b / (2 * f.a))
        if vertex < min(largest, TOKENS_PER_CHAR_MAX_VOCAB):
            doubts.append(
                _doubt(
                    "tokenization",
                    f"The fitted f(V) has its minimum at V = {vertex:,.0f} and rises beyond it, "
                    f"but predictions reach V = {largest:,.0f}. Larger vocabularies do not "
                    "make text longer: above that point f(V) is an artefact of the quadratic, "
                    "and what is computed from it there (the derivative approach, token "
                    "counts) is unreliable. Measure larger vocabularies.",
                )
            )
    if f(min(largest, TOKENS_PER_CHAR_MAX_VOCAB)) <= 0:
        doubts.append(
            _doubt(
                "tokenization",
                f"The fitted f(V) is not positive at V = {largest:,.0f}: it cannot be used there.",
            )
        )
    points = evidence.tokenization_points
    if points is not None and not points.empty:
        measured = float(points["vocab_size"].max())
        if largest / measured > far:
            doubts.append(
                _doubt(
                    "tokenization",
                    f"Predictions reach V = {largest:,.0f}, {largest / measured:.0f}x the largest "
                    f"tokenizer measured (V = {measured:,.0f}); f(V) is extrapolated that far.",
                )
            )
    return doubts


# --- rendering -------------------------------------------------------------------------------


def _sci(value: float) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _times(factor: float) -> str:
    if not np.isfinite(factor):
        return "n/a"
    if factor < 0.001:
        return "< 0.001x"
    return f"{factor:,.0f}x" if factor >= 100 else f"{factor:.3g}x"


def _range(low: float, high: float, scale=lambda v: f"{v:,.0f}") -> str:
    if not (np.isfinite(low) and np.isfinite(high)):
        return "n/a"
    return f"{scale(low)} – {scale(high)}"


def _glance_markdown(table: pd.DataFrame, doubts: list[dict[str, Any]]) -> list[str]:
    """One line per target: the range of rounded V the approaches give, and how many of the
    warnings below concern it."""
    general = sum(1 for d in doubts if d["target"] is None)
    lines = []
    for name, group in table[table["approach"].isin(APPROACHES)].groupby("target", sort=False):
        inside = group[~group["at_search_bound"]]
        if inside.empty:
            answer = "no interior optimum"
        else:
            low, high = inside["vocab_size_rounded"].min(), inside["vocab_size_rounded"].max()
            answer = f"V = {low:,}" if low == high else f"V = {low:,} to {high:,}"
            answer += f" across {len(inside)} approach{'es' if len(inside) > 1 else ''}"
        if len(inside) < len(group):
            answer += (
                " ("
                + ", ".join(TITLES[a] for a in group.loc[group["at_search_bound"], "approach"])
                + " at its search bound, left out)"
            )
        own = sum(1 for d in doubts if d["target"] == name)
        lines.append(
            f"- **{name}** (Nnv {human(group['nnv'].iloc[0])}, d {int(group['d_model'].iloc[0])}, "
            f"C {_sci(group['flops'].max())}): {answer}; "
            f"{own} warning(s) about this target"
            + (f", {general} about the whole fit" if general else "")
            + "."
        )
    return lines


def _predictions_markdown(table: pd.DataFrame, report: dict[str, Any], level: float) -> list[str]:
    lines = [
        f"V is rounded to a multiple of {report['round_to']} in brackets. Intervals are "
        f"{level:.0%} bootstrap percentiles over runs resampled with replacement (n/a: no "
        "refits). *paper V* is the same approach with the published coefficients of Tao et "
        "al. 2024, at the paper's own compute-optimal budget. Approaches 1 and 2 answer for the "
        "compute-optimal budget; C is approach 1's optimum unless the target names a budget. "
        "Approach 2's interval reflects only which swept V its anchor picks; its exponent "
        "comes from f(V) alone.",
        "",
        "| target | Nnv | d | approach | C (FLOPs) | V (rounded) | V interval | Nv | "
        "Nv interval | paper V |",
        "|---|--:|--:|---|--:|--:|--:|--:|--:|--:|",
    ]
    flagged = False
    for row in table.itertuples(index=False):
        mark = " †" if row.at_search_bound else ""
        flagged |= bool(row.at_search_bound)
        paper = row.paper_vocab_size
        lines.append(
            f"| {row.target} | {human(row.nnv)} | {int(row.d_model)} | {TITLES[row.approach]} | "
            f"{_sci(row.flops)} | {row.vocab_size:,.0f} ({row.vocab_size_rounded:,}){mark} | "
            f"{_range(row.vocab_size_low, row.vocab_size_high)} | {human(row.vocab_params)} | "
            f"{_range(row.vocab_params_low, row.vocab_params_high, human)} | "
            f"{'n/a' if pd.isna(paper) else f'{paper:,.0f}'} |"
        )
    if flagged:
        lines += ["", "† at the edge of the V range approach 3 searched: not a true optimum."]
    return lines


def _doubts_markdown(
    doubts: list[dict[str, Any]], distances: pd.DataFrame, report: dict[str, Any]
) -> list[str]:
    """The doubts grouped by kind: a bold title and its meaning, then each finding."""
    far = float(report.get("extrapolation_warn", 10.0))
    apart = float(report.get("disagreement_warn", 1.5))
    lines = []
    if doubts:
        lines += [f"{len(doubts)} warning(s), found in the data:", ""]
        for kind, (title, meaning) in DOUBT_KINDS.items():
            found = [d["message"] for d in doubts if d["kind"] == kind]
            if not found:
                continue
            meaning = meaning.format(far=far, apart=apart)
            head = f"- **{title}.**" + (f" {meaning}" if meaning else "")
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
    for row in distances.itertuples(index=False):
        spread = f"{row.disagreement:.2f}x" if np.isfinite(row.disagreement) else "n/a"
        lines.append(
            f"| {row.target} | {_sci(row.flops)} | {_times(row.extrapolation)} | {spread} |"
        )
    return lines


def _derivative_markdown(evidence: Evidence) -> list[str]:
    fitted = evidence.fitted("derivative")
    if fitted is None:
        return []
    anchor = fitted.get("anchor") or {}
    lines = [
        "### Approach 2: the derivative",
        "",
        f"gamma = {fitted['gamma']:.4g} is the slope of Nv against Nnv through the V that "
        "minimise the compute to process a fixed text, dC/dV = 0 with C = 6 (Nnv + V d) H f(V) "
        "(so it rests entirely on f(V), above). The curve is anchored at "
        f"Nv = {anchor.get('vocab_params', math.nan):,.0f} (V = "
        f"{anchor.get('vocab_size', math.nan):,.0f}, d = {anchor.get('d_model', math.nan):,.0f}, "
        f"Nnv = {human(anchor.get('nnv', math.nan))}), "
        + (
            f"the best vocabulary of the smallest model at C = {_sci(anchor['flops'])}."
            if anchor.get("flops")
            else "given on the command line."
        ),
    ]
    losses = anchor.get("losses") or []
    if losses:
        lines += ["", "| V | L_u at the anchor budget |", "|--:|--:|"]
        for row in sorted(losses, key=lambda r: r["vocab_size"]):
            best = " (best)" if row["vocab_size"] == anchor.get("vocab_size") else ""
            lines.append(f"| {row['vocab_size']:,.0f}{best} | {row['loss_u']:.4f} |")
    return [*lines, ""]


def _public_models_markdown(evidence: Evidence) -> list[str]:
    if not evidence.public_models:
        return []
    approaches = [a for a in APPROACHES if evidence.fitted(a)]
    header = " | ".join(f"{TITLES[a]} V" for a in approaches)
    lines = [
        "What well-known models chose, beside what the fitted approaches would recommend for "
        "their Nnv and width at the compute-optimal budget:",
        "",
        f"| model | Nnv | d | their V | {header} |",
        "|---|--:|--:|--:|" + "--:|" * len(approaches),
    ]
    for model in evidence.public_models:
        try:
            answer = predict(evidence.coefficients, model["nnv"], model["d_model"])["approaches"]
        except ValueError:
            answer = {}
        cells = " | ".join(
            f"{answer[a]['vocab_size']:,.0f}" if a in answer else "n/a" for a in approaches
        )
        lines.append(
            f"| {model['name']} | {human(model['nnv'])} | {model['d_model']} | "
            f"{model['vocab_size']:,} | {cells} |"
        )
    return [*lines, ""]


def _coefficients_markdown(coefficients: dict[str, Any]) -> list[str]:
    lines = ["| approach | coefficients | fit quality | options |", "|---|---|---|---|"]
    keys = {
        "isoflops": ("K1", "K2", "K3", "gamma", "nnv_exponent", "characters_exponent"),
        "derivative": ("gamma",),
        "parametric": ("E", "A1", "A2", "B", "alpha1", "alpha2", "beta"),
    }
    for approach in APPROACHES:
        fitted = coefficients.get(approach)
        if not fitted or "error" in fitted:
            reason = (coefficients.get("failed") or {}).get(approach, "absent")
            lines.append(f"| {TITLES[approach]} | not fitted: {reason} | | |")
            continue
        values = ", ".join(
            f"{k} = {fitted[k]:.4g}" for k in keys[approach] if fitted.get(k) is not None
        )
        fit = fitted.get("fit") or (fitted.get("exponent_fit") or {}).get("fit") or {}
        if approach == "isoflops":
            quality = ", ".join(
                f"R²({name}) = {fit[name]['r_squared']:.3f}"
                for name in ("nnv", "vocab_params", "characters")
                if isinstance(fit.get(name), dict) and fit[name].get("r_squared") is not None
            )
        else:
            quality = ", ".join(
                f"{k} = {fit[k]:.3g}" for k in ("r_squared", "rmse") if fit.get(k) is not None
            )
            if fit.get("points"):
                quality += f", {fit['points']} points"
        options = ", ".join(
            f"{k} = {v}"
            for k, v in (fitted.get("options") or {}).items()
            if not isinstance(v, dict)
        )
        lines.append(f"| {TITLES[approach]} | {values} | {quality} | {options} |")
    tokenization = coefficients.get("tokenization") or {}
    if all(k in tokenization for k in "abc"):
        lines.append(
            f"| f(V) | a = {tokenization['a']:.5g}, b = {tokenization['b']:.5g}, "
            f"c = {tokenization['c']:.5g} | "
            + (f"R² = {tokenization['r_squared']:.4f}" if "r_squared" in tokenization else "")
            + f" | source: {tokenization.get('source', 'n/a')} |"
        )
    return lines


def render_markdown(
    evidence: Evidence,
    report: dict[str, Any],
    doubts: list[dict[str, Any]],
    figures: dict[str, str | None],
    sources: dict[str, str],
) -> str:
    table = evidence.predictions
    level = _confidence(evidence.coefficients)
    runs = evidence.runs
    lines = ["# Vocabulary-size prediction report", ""]
    if runs is not None:
        data = (
            f"Fitted on {runs['run'].nunique()} runs ({runs['non_vocab_params'].nunique()} model "
            f"shapes x {runs['vocab_size'].nunique()} vocabulary sizes from "
            f"{runs['vocab_size'].min():,.0f} to {runs['vocab_size'].max():,.0f}), "
            f"{len(runs)} evaluation checkpoints, compute {_sci(runs['flops'].min())} to "
            f"{_sci(runs['flops'].max())} FLOPs."
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
        "## Predicted vocabulary size",
        "",
        *_glance_markdown(table, doubts),
        "",
        *_predictions_markdown(table, report, level),
        "",
        "## What to doubt",
        "",
        *_doubts_markdown(doubts, target_distances(evidence), report),
        "",
        "## The evidence",
        "",
    ]
    for spec in FIGURES:
        lines += [f"### {spec.title}", ""]
        if figures.get(spec.name) is None:
            lines += [f"![{spec.title}](figures/{spec.name}.png)", "", spec.caption, ""]
        else:
            lines += [f"*Not drawn: {figures[spec.name]}.*", ""]
        if spec.name == "isoflops_power_laws":
            lines += _derivative_markdown(evidence)
        if spec.name == "vocab_vs_nnv":
            lines += _public_models_markdown(evidence)
    lines += ["## Coefficients", "", *_coefficients_markdown(evidence.coefficients), ""]
    lines += ["## Inputs", ""]
    lines += [f"- {name}: `{value}`" for name, value in sources.items()]
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
        summary[f"vocab_size.{key}"] = round(float(row.vocab_size), 1)
        summary[f"vocab_size_rounded.{key}"] = int(row.vocab_size_rounded)
    for row in target_distances(evidence).itertuples(index=False):
        if np.isfinite(row.extrapolation):
            summary[f"extrapolation.{row.target}"] = float(f"{row.extrapolation:.4g}")
        if np.isfinite(row.disagreement):
            summary[f"disagreement.{row.target}"] = round(float(row.disagreement), 4)
    isoflops = ((evidence.fitted("isoflops") or {}).get("fit") or {}).get("vocab_params") or {}
    parametric = (evidence.fitted("parametric") or {}).get("fit") or {}
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


# --- the stage -------------------------------------------------------------------------------


def build_report(
    estimates: str | Path,
    runs_path: str | Path | None,
    report: dict[str, Any],
    out_dir: str | Path,
    tokenization: str | Path | None = None,
) -> dict[str, Any]:
    """Write the report directory; returns the predictions table and the doubts."""
    coefficients = load_coefficients(estimates)
    targets = resolve_targets(report)
    predictions = build_predictions(coefficients, targets, report.get("round_to", 128))
    runs, diverged, runs_note = load_runs_for_report(runs_path, coefficients)
    points, points_source = load_tokenization_points(tokenization, runs)
    evidence = Evidence(
        coefficients=coefficients,
        targets=targets,
        predictions=predictions,
        runs=runs,
        diverged=diverged,
        runs_note=runs_note,
        tokenization_points=points,
        tokenization_points_source=points_source,
        public_models=list(report.get("public_models") or PUBLIC_MODELS),
        budget_range=tuple(sorted(report.get("budget_range", (0.1, 10.0)))),
    )
    doubts = find_doubts(evidence, report)
    sources = {
        "coefficients": str(estimates),
        "runs table": str(runs_path) if runs_path else "none",
        "tokenizers' f(V) measurements": str(tokenization) if tokenization else "none",
    }
    with atomic_dir(out_dir) as tmp:
        (tmp / "figures").mkdir()
        figures = draw_figures(evidence, tmp / "figures")
        for name, reason in figures.items():
            if reason:
                log.warning("report: figure %s not drawn: %s", name, reason)
        markdown_text = render_markdown(evidence, report, doubts, figures, sources)
        (tmp / "report.md").write_text(markdown_text)
        (tmp / "report.html").write_text(render_html(markdown_text, tmp / "figures"))
        write_csv(tmp / "predictions.csv", predictions)
        write_json(tmp / "doubts.json", doubts)
        write_json(tmp / "summary.json", summary_metrics(evidence, doubts))
        write_csv(tmp / "isoflops_envelope.csv", envelope_points(evidence))
        (tmp / "coefficients.json").write_text(to_json(coefficients))
    for doubt in doubts:
        log.warning("doubt: %s", re.sub(r"\*\*", "", doubt["message"]))
    return {"predictions": predictions, "doubts": doubts, "figures": figures}
