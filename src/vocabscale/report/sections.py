"""The report's sections that sit under a figure (`contents.FIGURES` attaches each to its
figure): approach 2's anchor, what public models chose, every run's last checkpoint, and the
downstream scores; and, after the predictions, V fitted on L_u beside V on bits per byte. Each
takes the Evidence and returns Markdown lines; nothing is fitted."""

from __future__ import annotations

import math

import pandas as pd

from vocabscale.estimate.approaches import APPROACHES
from vocabscale.estimate.bootstrap import refit_interval
from vocabscale.estimate.predict import predict, predictions_table
from vocabscale.estimate.results import ApproachResult, Estimates, Fit
from vocabscale.report.evidence import (
    Evidence,
    Skipped,
    downstream_metric,
    downstream_predictions,
    title,
)
from vocabscale.report.numbers import human, sci


def anchor_interval(evidence: Evidence, key: str = "vocab_size", show=None) -> str:
    """`, 90% interval a - b` of the anchor's `key` over the bootstrap refits ('' without)."""
    result = evidence.fitted("derivative")
    show = show or (lambda value: f"{value:,.0f}")

    def anchor_value(fit: Fit) -> float | None:
        anchor = fit.coefficient("anchor")
        return anchor.get(key) if anchor else None

    interval = None if result is None else refit_interval(result, anchor_value, evidence.confidence)
    if interval is None or not interval.available:
        return ""
    low, high = float(interval.low), float(interval.high)
    return f", {evidence.confidence:.0%} interval {show(low)} – {show(high)}"


def anchor_budget_text(evidence: Evidence, anchor: dict) -> str:
    """Why the anchor was read at its budget (` ` + a sentence, or '')."""
    rule = anchor.get("budget_rule")
    if rule == "compute_optimal":
        spread = anchor_interval(evidence, "flops", sci).removeprefix(", ")
        text = (
            " That budget is the smallest model's compute-optimal one under approach 1's "
            f"Nnv = e^K1 C^a refitted on these runs, K1 = {anchor['compute_optimal_K1']:.4g}"
            + (f" (the budget's {spread} over the refits)" if spread else "")
        )
        if anchor.get("budget_clamped"):
            text += (
                f", held to the range every run of it reaches: approach 1 puts it at "
                f"{sci(anchor['compute_optimal_flops'])}, {anchor['budget_clamped']} that range"
            )
        return text + "."
    if rule == "largest_common":
        why = anchor.get("compute_optimal_unavailable")
        return " That budget is the largest every run of the smallest model reaches" + (
            f" (approach 1 could not be fitted: {why})." if why else " (anchor_budget)."
        )
    if rule == "authors":
        return " As the authors' script does, at the paper's budget and Nnv = 33,000,000."
    return ""


def derivative_markdown(evidence: Evidence) -> list[str]:
    """Approach 2 has no figure of its own: its gamma and anchor, under approach 1's laws."""
    fit = evidence.fit("derivative")
    if fit is None:
        return []
    anchor = fit.coefficient("anchor") or {}
    lines = [
        "### Approach 2: the derivative",
        "",
        f"gamma = {fit.coefficients['gamma']:.4g} is the slope of Nv against Nnv through the V "
        "that minimise the compute to process a fixed text, dC/dV = 0 with "
        "C = 6 (Nnv + V d) H f(V) (so it rests entirely on f(V), above). The curve is anchored at "
        f"Nv = {anchor.get('vocab_params', math.nan):,.0f} (V = "
        f"{anchor.get('vocab_size', math.nan):,.0f}{anchor_interval(evidence)}, "
        f"d = {anchor.get('d_model', math.nan):,.0f}, "
        f"Nnv = {human(anchor.get('nnv', math.nan))}), "
        + (
            (
                "the vertex of a quadratic in ln V through L_u of the smallest model's swept V "
                f"near the best one at C = {sci(anchor['flops'])}."
                if anchor.get("anchor_method") == "vertex" and not anchor.get("no_vertex")
                else f"the best vocabulary of the smallest model at C = {sci(anchor['flops'])}."
            )
            if anchor.get("flops")
            else "given on the command line."
        )
        + anchor_budget_text(evidence, anchor),
    ]
    losses = anchor.get("losses") or []
    if losses:
        lines += ["", "| V | L_u at the anchor budget |", "|--:|--:|"]
        for row in sorted(losses, key=lambda r: r["vocab_size"]):
            best = " (best)" if row["vocab_size"] == anchor.get("vocab_size") else ""
            lines.append(f"| {row['vocab_size']:,.0f}{best} | {row['loss_u']:.4f} |")
    return [*lines, ""]


def public_models_markdown(evidence: Evidence) -> list[str]:
    """What public models chose, beside each approach's V and the recommendation for their
    Nnv and width at the compute-optimal budget."""
    if not evidence.public_models:
        return []
    approaches = [a for a in APPROACHES if evidence.fitted(a)]
    header = " | ".join(f"{title(a)} V" for a in approaches)
    lines = [
        "What well-known models chose, beside what the fitted approaches would recommend for "
        "their Nnv and width at the compute-optimal budget (*no answer*: the fit gives only a "
        "bound there):",
        "",
        f"| model | Nnv | d | their V | recommended V | {header} |",
        "|---|--:|--:|--:|--:|" + "--:|" * len(approaches),
    ]
    for model in evidence.public_models:
        try:
            answer = predict(evidence.estimates, model["nnv"], model["d_model"], intervals=True)
        except ValueError:
            answer = None
        cells = [value_text(answer.recommended.vocab_size) if answer else "n/a"]
        for approach in approaches:
            found = answer.approaches.get(approach) if answer else None
            cells.append("n/a" if found is None else value_text(found.vocab_size))
        lines.append(
            f"| {model['name']} | {human(model['nnv'])} | {model['d_model']} | "
            f"{model['vocab_size']:,} | {' | '.join(cells)} |"
        )
    return [*lines, ""]


def value_text(value: float | None) -> str:
    return "no answer" if value is None else f"{value:,.0f}"


def _score(value: float, stderr: float) -> str:
    return "n/a" if pd.isna(value) else f"{value:.3f} ± {stderr:.3f}"


def downstream_markdown(evidence: Evidence) -> list[str]:
    """The downstream scores of every run (the best V of each model and task in bold), and
    each approach's predicted V for each model at its compute."""
    try:
        table = evidence.need_downstream()
    except Skipped:
        return []
    lines = [
        "Scores ± one standard error; documents scored and shots per task: "
        + ", ".join(
            f"{task} {int(group['samples'].max())} ({int(group['num_fewshot'].max())}-shot)"
            for task, group in table.groupby("task", sort=False)
        )
        + ".",
        "",
        "| task | model | V | C (FLOPs) | acc | acc_norm |",
        "|---|---|--:|--:|--:|--:|",
    ]
    order = {task: i for i, task in enumerate(dict.fromkeys(table["task"]))}
    table = table.sort_values(
        ["task", "non_vocab_params", "vocab_size"],
        key=lambda column: column.map(order) if column.name == "task" else column,
    )
    metric = downstream_metric(table)
    best = table.groupby(["task", "model"])[metric].transform("max")
    for row, top in zip(table.itertuples(index=False), best == table[metric]):
        v = f"**{row.vocab_size:,}**" if top else f"{row.vocab_size:,}"
        lines.append(
            f"| {row.task} | {row.model} | {v} | {sci(row.flops)} | "
            f"{_score(row.acc, row.acc_stderr)} | {_score(row.acc_norm, row.acc_norm_stderr)} |"
        )
    predicted = downstream_predictions(evidence)
    if not predicted.empty:
        wide = predicted.pivot(index="model", columns="approach", values="vocab_size")
        models = predicted.groupby("model", sort=False)[["nnv", "flops"]].first()
        approaches = [a for a in APPROACHES if a in wide.columns]
        lines += [
            "",
            f"Bold: the best V of each model on each task by {metric}. What each approach "
            "predicts for these models (approach 3 at their compute, C below; approaches 1 and "
            "2 at the compute-optimal budget of their Nnv):",
            "",
            "| model | Nnv | C (FLOPs) | " + " | ".join(f"{title(a)} V" for a in approaches) + " |",
            "|---|--:|--:|" + "--:|" * len(approaches),
        ]
        for model, row in models.iterrows():
            cells = " | ".join(f"{wide.loc[model, a]:,.0f}" for a in approaches)
            lines.append(f"| {model} | {human(row['nnv'])} | {sci(row['flops'])} | {cells} |")
    return [*lines, ""]


def final_losses_markdown(evidence: Evidence) -> list[str]:
    """Each run's last checkpoint: loss, L_u, bits per character and per byte (the
    tokenizer-independent measures), where the runs table has them."""
    if evidence.runs is None:
        return []
    runs = evidence.runs
    columns = [c for c in ("loss", "loss_u", "bpc", "bpb") if c in runs.columns]
    last = runs.sort_values("flops").groupby("run", sort=False).tail(1)
    last = last.sort_values(["non_vocab_params", "vocab_size"])
    lines = [
        "The last checkpoint of every run (bpc, bpb: bits per character and per UTF-8 byte of "
        "the evaluation text, comparable across tokenizers):",
        "",
        "| run | V | Nnv | C (FLOPs) | " + " | ".join(columns) + " |",
        "|---|--:|--:|--:|" + "--:|" * len(columns),
    ]
    for row in last.itertuples(index=False):
        values = " | ".join(f"{getattr(row, c):.4f}" for c in columns)
        lines.append(
            f"| {row.run} | {row.vocab_size:,.0f} | {human(row.non_vocab_params)} | "
            f"{sci(row.flops)} | {values} |"
        )
    return [*lines, ""]


#: What `estimate.target` fits, as the report names it.
TARGET_NAMES = {"loss_u": "L_u", "bpb": "bits per byte"}


def other_target_estimates(evidence: Evidence) -> tuple[str, str, Estimates | None, str]:
    """(the target fitted, the other, every approach's fit on the other, or None and why)."""
    records = {
        name: result.fit.detail("other_target")
        for name, result in evidence.estimates.approaches.items()
        if result.fit.detail("other_target")
    }
    target = next(
        (r.fit.detail("target") for r in evidence.estimates.approaches.values()), "loss_u"
    )
    other = next((r["target"] for r in records.values()), "bpb")
    fits = {
        name: ApproachResult(name, Fit.from_json(name, record, details=False))
        for name, record in records.items()
        if "error" not in record
    }
    errors = sorted({record["error"] for record in records.values() if "error" in record})
    estimates = Estimates(fits, evidence.estimates.tokenization) if fits else None
    return target or "loss_u", other, estimates, "; ".join(errors)


def answer_cell(vocab_size: float) -> str:
    """A V, or 'no answer' where the fit gave none (a bound or a search edge)."""
    return f"{vocab_size:,.0f}" if math.isfinite(vocab_size) else "no answer"


def target_comparison_markdown(evidence: Evidence) -> list[str]:
    """V fitted on L_u beside V fitted on bits per byte (`estimate.target`): each approach
    also fitted on the other target (without refits), both read at each target's budget."""
    target, other, estimates, errors = other_target_estimates(evidence)
    if estimates is None and not errors:
        return []
    fitted, alternative = TARGET_NAMES[target], TARGET_NAMES[other]
    lines = [f"## V fitted on {fitted} and on {alternative}", ""]
    if estimates is None:
        return [*lines, f"Not fitted on {alternative}: {errors}.", ""]
    try:
        table = predictions_table(estimates, evidence.targets)
    except ValueError:  # approach 3 without approach 1's budget
        table = predictions_table(estimates.replace("parametric", None), evidence.targets)
    moved = table.set_index(["target", "approach"])["vocab_size"]
    lines += [
        f"Each approach fitted on {alternative} too (no refits; approaches 2 and 3 at the "
        f"budget approach 1 gives on {alternative}). Bits per byte needs no unigram model and "
        "does not depend on the tokenizer; where the two disagree, V rests on the target.",
        "",
        f"| target | approach | V on {fitted} (above) | V on {alternative} | ratio |",
        "|---|---|--:|--:|--:|",
    ]
    main = evidence.predictions[evidence.predictions["approach"].isin(APPROACHES)]
    for row in main.itertuples(index=False):
        if (row.target, row.approach) not in moved.index:
            continue
        value = float(moved.loc[(row.target, row.approach)])
        both = math.isfinite(value) and math.isfinite(row.vocab_size)
        lines.append(
            f"| {row.target} | {title(row.approach)} | {answer_cell(row.vocab_size)} | "
            f"{answer_cell(value)} | {f'{value / row.vocab_size:.3f}' if both else 'n/a'} |"
        )
    if errors:
        lines += ["", f"Not fitted on {alternative}: {errors}."]
    return [*lines, ""]
