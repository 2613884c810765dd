"""What the report reads, gathered once: the coefficients, the targets' predictions, the runs
and the tokenizers' measurements, as one `Evidence` that the doubt checks, the figures and the
renderers take.

The runs table and the f(V) measurements are optional: what needs them raises `Skipped` (with
a sentence the report prints in its place) when they are absent, so a report rebuilt from a
bare coefficients file still builds.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from vocabscale.accounting import MIN_VOCAB_SIZE, width_for_nnv
from vocabscale.estimate.approaches import APPROACHES
from vocabscale.estimate.predict import (
    RECOMMENDED,
    confidence_of,
    load_coefficients,
    predict,
    predictions_table,
)
from vocabscale.estimate.published import PAPER_COEFFICIENTS
from vocabscale.estimate.results import ApproachResult, Estimates, Fit
from vocabscale.io import read_json
from vocabscale.runs.table import (
    RunsTableError,
    diverged_rows,
    prepare_runs,
    tokens_per_char_from_table,
)
from vocabscale.tokens_per_char import TokensPerChar

log = logging.getLogger(__name__)

#: Rows the report adds beside the approaches: approach 3 fitted with true token counts, shown
#: when the compatibility switch is on.
TRUE_TOKENS = "parametric_true_tokens"


def title(name: str) -> str:
    """What the report calls an approach (or the true-token variant of approach 3, or the
    recommendation)."""
    if name == RECOMMENDED:
        return "Recommended"
    return "Parametric (true D)" if name == TRUE_TOKENS else APPROACHES[name].title


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


def round_to_multiple(value: float, multiple: int) -> int:
    """V rounded to a multiple that suits the hardware (embedding shards, tensor cores), never
    below the smallest vocabulary a byte-level BPE can have."""
    smallest = multiple * math.ceil(MIN_VOCAB_SIZE / multiple)
    return int(max(smallest, multiple * round(value / multiple)))


def tokens_per_char_of(estimates: Estimates) -> TokensPerChar | None:
    """The f(V) the estimators used (absent from some hand-made coefficient files)."""
    spec = estimates.tokenization or {}
    if all(isinstance(spec.get(k), (int, float)) for k in "abc"):
        return TokensPerChar(float(spec["a"]), float(spec["b"]), float(spec["c"]))
    return None


class Skipped(Exception):
    """A piece of the report cannot be made from the inputs given; the message says what is
    missing."""


@dataclass
class Evidence:
    """Everything the doubt checks, the figures and the renderers read, gathered once."""

    estimates: Estimates
    settings: dict[str, Any]  # the `report` section of params, defaults filled in
    targets: list[dict[str, Any]]
    predictions: pd.DataFrame
    runs: pd.DataFrame | None = None  # usable rows, as the estimators saw them
    diverged: pd.DataFrame | None = None  # rows excluded as diverged
    runs_note: str = "no runs table was given"
    tokenization_points: pd.DataFrame | None = None  # vocab_size, tokens_per_character
    tokenization_points_source: str = ""
    downstream: pd.DataFrame | None = None  # scores per run and task (collect-downstream)
    downstream_note: str = "no downstream table was given"
    sources: dict[str, str] = field(default_factory=dict)  # what each input was
    comparison: pd.DataFrame | None = None  # the other method's predictions, if it was fitted
    backtest: pd.DataFrame | None = None  # the backtest's comparisons, if one was given

    @property
    def tokens_per_char(self) -> TokensPerChar | None:
        return tokens_per_char_of(self.estimates)

    @property
    def public_models(self) -> list[dict[str, Any]]:
        return list(self.settings["public_models"] or PUBLIC_MODELS)

    @property
    def confidence(self) -> float:
        return confidence_of(self.estimates)

    def fitted(self, approach: str) -> ApproachResult | None:
        return self.estimates.fitted(approach)

    def fit(self, approach: str) -> Fit | None:
        return self.estimates.fit(approach)

    def need(self, approach: str) -> ApproachResult:
        """The approach's result, or Skipped saying why there is none."""
        fitted = self.fitted(approach)
        if fitted is None:
            reason = self.estimates.failed.get(approach, "absent from the input")
            raise Skipped(f"needs approach {title(approach)}, which was not fitted ({reason})")
        return fitted

    def need_downstream(self) -> pd.DataFrame:
        """The downstream scores, or Skipped saying why there are none."""
        if self.downstream is None or self.downstream.empty:
            raise Skipped(self.downstream_note)
        return self.downstream

    def need_runs(self) -> pd.DataFrame:
        """The runs table, or Skipped saying why there is none."""
        if self.runs is None or self.runs.empty:
            raise Skipped(f"needs the runs table ({self.runs_note})")
        return self.runs


def resolve_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {**t, "d_model": t.get("d_model") or width_for_nnv(t["nnv"])} for t in report["targets"]
    ]


def load_runs_for_report(
    path: str | Path | None, estimates: Estimates
) -> tuple[pd.DataFrame | None, pd.DataFrame | None, str]:
    """(usable rows, rows excluded as diverged, note). A table that cannot be read is reported
    and left out: the report still builds from the coefficients alone."""
    if path is None:
        return None, None, "no runs table was given"
    try:
        raw = pd.read_csv(path)
        runs = prepare_runs(raw, tokens_per_char_of(estimates), str(path))
    except (OSError, RunsTableError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        log.warning("report: leaving the runs table out: %s", error)
        return None, None, f"the runs table could not be used: {error}"
    return runs.frame, diverged_rows(raw), str(path)


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


def load_downstream(path: str | Path | None) -> tuple[pd.DataFrame | None, str]:
    """(scores per run and task, note): results/downstream.csv, empty while evaluation is
    off."""
    if path is None:
        return None, "no downstream table was given"
    table = pd.read_csv(path)
    if table.empty:
        return None, "downstream evaluation is off (downstream.tasks is empty)"
    return table, str(path)


def downstream_metric(table: pd.DataFrame) -> str:
    """acc_norm (length-normalized, what ARC and HellaSwag are usually quoted with) where the
    tasks have it, else acc."""
    return "acc_norm" if table["acc_norm"].notna().any() else "acc"


def downstream_predictions(evidence: Evidence) -> pd.DataFrame:
    """Each approach's V for each model shape of the downstream table: approach 3 at that
    model's compute (the mean C of its runs, which differ only by the vocabulary's 6 V d D),
    approaches 1 and 2 at the compute-optimal budget of its Nnv, the only one they answer
    for."""
    table = evidence.need_downstream()
    models = table.groupby("model", sort=False).agg(
        nnv=("non_vocab_params", "first"), d_model=("d_model", "first"), flops=("flops", "mean")
    )
    rows = []
    for model, row in models.iterrows():
        try:
            answer = predict(evidence.estimates, row["nnv"], row["d_model"], row["flops"])
        except ValueError:
            continue
        for approach, prediction in answer.approaches.items():
            if prediction.vocab_size is None:
                continue
            rows.append({"vocab_size": prediction.vocab_size, "model": model, **row})
            rows[-1]["approach"] = approach
    columns = ["model", "nnv", "d_model", "flops", "approach", "vocab_size"]
    return pd.DataFrame(rows).reindex(columns=columns)


def _table_for_target(estimates: Estimates, target: dict, settings: dict) -> pd.DataFrame:
    """predictions_table for one target (rounding and the band's tolerance from the report's
    settings); without a budget for approach 3 (no approach 1 and no `flops` given), the
    other approaches still answer."""
    rounding = (settings["round_to"], settings["band_tolerance"])
    try:
        return predictions_table(estimates, [target], *rounding)
    except ValueError as error:
        log.warning("report: %s: %s", target["name"], error)
        return predictions_table(estimates.replace("parametric", None), [target], *rounding)


def true_tokens_result(estimates: Estimates) -> ApproachResult | None:
    """Approach 3 fitted with true token counts, which the compatibility switch reports beside
    the switched fit (no refits of its own)."""
    fitted = estimates.fitted("parametric")
    record = None if fitted is None else fitted.fit.detail("true_tokenization")
    if not record:
        return None
    true_fit = Fit.from_json("parametric", record, details=False)
    return ApproachResult("parametric", true_fit, fitted.method)


def build_predictions(
    estimates: Estimates, targets: list[dict[str, Any]], settings: dict[str, Any]
) -> pd.DataFrame:
    """One row per target and approach: V and Nv with bootstrap intervals, the published-
    coefficient V beside it, V rounded, and whether approach 3 hit its search bound. With the
    compatibility switch on, approach 3 fitted with true token counts gets rows of its own."""
    round_to = settings["round_to"]
    tables = [_table_for_target(estimates, t, settings) for t in targets]
    true_tokens = true_tokens_result(estimates)
    if true_tokens is not None:
        alternative = estimates.replace("parametric", true_tokens)
        for target in targets:
            rows = _table_for_target(alternative, target, settings)
            rows = rows[rows["approach"] == "parametric"].assign(approach=TRUE_TOKENS)
            tables.append(rows)
    table = pd.concat(tables, ignore_index=True)
    if table.empty:
        raise ValueError("no approach answered for any target")
    order = {name: i for i, name in enumerate([RECOMMENDED, *APPROACHES, TRUE_TOKENS])}
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
    true_rows = table["approach"] == TRUE_TOKENS
    if true_rows.any():  # the published value of approach 3 is the one to compare with
        published = paper[paper["approach"] == "parametric"].set_index("target")
        for column in ("paper_vocab_size", "paper_vocab_params"):
            table.loc[true_rows, column] = table.loc[true_rows, "target"].map(published[column])
    table["vocab_params_low"] = table["vocab_size_low"] * table["d_model"]
    table["vocab_params_high"] = table["vocab_size_high"] * table["d_model"]
    table["vocab_size_rounded"] = pd.array(
        [None if pd.isna(v) else round_to_multiple(v, round_to) for v in table["vocab_size"]],
        dtype="Int64",
    )
    table["at_search_bound"] = table["at_search_bound"].fillna(False).astype(bool)
    return table


def largest_fitted_flops(evidence: Evidence) -> float | None:
    """The largest compute any approach was fitted on (the runs, else approach 1's range)."""
    candidates = []
    if evidence.runs is not None and not evidence.runs.empty:
        candidates.append(float(evidence.runs["flops"].max()))
    fit = evidence.fit("isoflops")
    flops_range = None if fit is None else fit.detail("flops_range")
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
        values = main.set_index("approach")["vocab_size"].dropna()
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


def isoflops_envelope(evidence: Evidence) -> pd.DataFrame:
    """Approach 1's envelope points, sorted by compute."""
    fitted = evidence.need("isoflops")
    envelope = pd.DataFrame(fitted.fit.detail("envelope") or [])
    if envelope.empty:
        raise Skipped("the IsoFLOPs coefficients carry no envelope points")
    if "vocab_params" not in envelope:
        envelope["vocab_params"] = envelope["vocab_size"] * envelope["d_model"]
    if "kind" not in envelope:
        envelope["kind"] = "observed"
    return envelope.sort_values("flops")


@dataclass(frozen=True)
class ReportInputs:
    """What a report is built from: the coefficients (an estimates directory, a
    coefficients.json or `paper`) and, each optional, the backtest's directory, the runs
    table, the tokenizers' f(V) measurements and the downstream scores."""

    estimates: str | Path
    runs: str | Path | None = None
    tokenization: str | Path | None = None
    downstream: str | Path | None = None
    backtest: str | Path | None = None

    def sources(self) -> dict[str, str]:
        return {
            "coefficients": str(self.estimates),
            "backtest": str(self.backtest) if self.backtest else "none",
            "runs table": str(self.runs) if self.runs else "none",
            "tokenizers' f(V) measurements": str(self.tokenization)
            if self.tokenization
            else "none",
            "downstream scores": str(self.downstream) if self.downstream else "none",
        }


def load_backtest(path: str | Path | None) -> tuple[pd.DataFrame | None, dict[str, Any] | None]:
    """(comparisons, summary) of a backtest directory; (None, None) without one."""
    if path is None:
        return None, None
    path = Path(path)
    return pd.read_csv(path / "backtest.csv"), read_json(path / "summary.json")


def gather_evidence(inputs: ReportInputs, settings: dict[str, Any]) -> Evidence:
    """Read the report's inputs and predict every target (with the backtest's rule when a
    backtest is given, which the written coefficients then carry)."""
    loaded = load_coefficients(inputs.estimates)
    backtest, summary = load_backtest(inputs.backtest)
    if summary is not None:
        loaded.backtest = summary
    targets = resolve_targets(settings)
    predictions = build_predictions(loaded, targets, settings)
    other = loaded.other_method() if settings["compare_authors"] else None
    comparison = None
    if other is not None:
        tables = [_table_for_target(other, t, settings) for t in targets]
        comparison = pd.concat(tables, ignore_index=True)
        comparison = comparison[comparison["approach"] != RECOMMENDED]
    runs, diverged, runs_note = load_runs_for_report(inputs.runs, loaded)
    points, points_source = load_tokenization_points(inputs.tokenization, runs)
    scores, scores_note = load_downstream(inputs.downstream)
    return Evidence(
        estimates=loaded,
        settings=settings,
        targets=targets,
        predictions=predictions,
        runs=runs,
        diverged=diverged,
        runs_note=runs_note,
        tokenization_points=points,
        tokenization_points_source=points_source,
        downstream=scores,
        downstream_note=scores_note,
        comparison=comparison,
        backtest=backtest,
        sources=inputs.sources(),
    )
