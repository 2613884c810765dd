"""The backtest: every approach judged by what it predicts for runs it did not see.

- *Leave the largest models out*: for each of the largest models in turn (as many as leave
  at least three smaller ones to fit on), every approach is fitted on the smaller models only
  and asked for the held-out model's best V.
- *Leave the largest budgets out*: every approach is fitted on each run's checkpoints up to
  a fraction of its tokens and asked for each model's best V at its full budget.

The truth is the held-out runs' own best V (`empirical`). Approach 3 is compared at several
budgets the held-out runs all reach; approaches 1 and 2 only at the compute-optimal budget
their fit implies, when it lies there. The comparisons choose the recommendation's rule
(`recommend`): its weights, and the out-of-sample error its interval carries."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from vocabscale.accounting import log_spaced
from vocabscale.estimate.approaches import APPROACHES
from vocabscale.estimate.empirical import (
    EmpiricalOptimum,
    ReadingAtBudget,
    common_budget_range,
    empirical_optimum,
)
from vocabscale.estimate.fit import estimate_all
from vocabscale.estimate.noise import estimate_noise
from vocabscale.estimate.predict import RECOMMENDED, compute_optimal_flops, predict
from vocabscale.estimate.recommend import (
    Record,
    Rule,
    combine,
    distance_from_middle,
    fallback_rule,
    weights_from_records,
)
from vocabscale.estimate.results import Estimates, Prediction
from vocabscale.runs.table import RunsTable, RunsTableError
from vocabscale.tokens_per_char import TokensPerCharFit

log = logging.getLogger(__name__)

#: A model holdout fits on at least this many smaller models.
MIN_TRAINING_MODELS = 3
#: The columns that describe a comparison's truth.
TRUTH_COLUMNS = ("empirical_vocab_size", "empirical_low", "empirical_high", "empirical_problem")


@dataclass(frozen=True)
class Holdout:
    """One way of hiding runs from the fit: the table fitted on, and per model compared the
    compute range the comparison may use (where its runs are unseen by the fit)."""

    kind: str  # "model" or "budget"
    name: str
    train: RunsTable
    ranges: dict[str, tuple[float, float]]  # model: (lowest, highest) budget compared
    spread: bool  # approach 3 compared at several budgets up to the highest (else only there)


def model_holdouts(runs: RunsTable) -> list[Holdout]:
    """Each model from the fourth smallest up, fitted on the models smaller than it."""
    frame = runs.frame
    sizes = sorted(frame["non_vocab_params"].unique())
    holdouts = []
    for size in sizes[MIN_TRAINING_MODELS:]:
        held = frame[frame["non_vocab_params"] == size]
        if held["vocab_size"].nunique() < 3:
            continue
        train = RunsTable(
            frame[frame["non_vocab_params"] < size].reset_index(drop=True), runs.source
        )
        low, high = common_budget_range(held)
        model = str(held["model"].iloc[0])
        holdouts.append(Holdout("model", model, train, {model: (low, high)}, spread=True))
    return holdouts


def budget_holdout(runs: RunsTable, fraction: float) -> Holdout | None:
    """Every run cut at `fraction` of its tokens; each model (of three V or more) compared
    between the cut and its full budget."""
    frame = runs.frame
    kept = frame["tokens"] <= fraction * frame.groupby("run")["tokens"].transform("max")
    train = frame[kept].reset_index(drop=True)
    ranges = {}
    for model, rows in frame.groupby("model", sort=False):
        cut = train[train["model"] == model]
        if (
            rows["vocab_size"].nunique() < 3
            or cut.empty
            or cut["run"].nunique() < rows["run"].nunique()
        ):
            continue
        seen, high = common_budget_range(cut)[1], common_budget_range(rows)[1]
        if high > seen:
            ranges[str(model)] = (seen * (1 + 1e-9), high)
    if not ranges or train["non_vocab_params"].nunique() < 2:
        return None
    name = f"the first {fraction:.0%} of each run's tokens"
    return Holdout("budget", name, RunsTable(train, runs.source), ranges, spread=False)


@dataclass(frozen=True)
class BacktestSettings:
    options: dict[str, Any]  # params' `estimate` section
    fraction: float  # the budget holdout's cut
    budgets: int  # budgets approach 3 is compared at per held-out model
    truth_draws: int  # noise draws for the truth's interval


def comparison_budgets(low: float, high: float, count: int) -> list[float]:
    """Approach 3's budgets for a held-out model: `count` of them log-spaced over the top
    quarter of its runs' common range (the bottom holds the first, noisiest checkpoints)."""
    low = max(low, high / 4)
    return [high] if low >= high or count < 2 else list(log_spaced(low, high, count))


def _row(holdout: Holdout, model: pd.Series, approach: str, flops: float | None) -> dict[str, Any]:
    return {
        "holdout": holdout.kind,
        "held_out": holdout.name,
        "model": model["model"],
        "nnv": model["nnv"],
        "d_model": model["d_model"],
        "approach": approach,
        "flops": flops,
    }


def _compare(row: dict, prediction: Prediction | None, truth: EmpiricalOptimum | None) -> dict:
    """Fill a row with the prediction, the truth, and how far apart they are."""
    if prediction is not None:
        row.update(
            method=prediction.method, vocab_size=prediction.vocab_size, reason=prediction.reason
        )
        interval = prediction.interval
        if interval is not None and interval.available and prediction.vocab_size is not None:
            row.update(vocab_size_low=float(interval.low), vocab_size_high=float(interval.high))
    if truth is not None:
        row.update(
            empirical_vocab_size=truth.vocab_size,
            empirical_low=truth.low,
            empirical_high=truth.high,
            empirical_problem=truth.problem,
        )
    if row.get("vocab_size") is not None and truth is not None and truth.problem is None:
        row["ln_ratio"] = math.log(row["vocab_size"] / truth.vocab_size)
        low, high = row.get("vocab_size_low"), row.get("vocab_size_high")
        if low is not None:
            row["covered"] = bool(low <= truth.vocab_size <= high)
    return row


class Backtester:
    """Runs every holdout of one table and collects the comparisons."""

    def __init__(self, runs: RunsTable, f: TokensPerCharFit, settings: BacktestSettings):
        self.runs, self.f, self.settings = runs, f, settings
        self.noise = estimate_noise(runs.frame)
        self.models = runs.frame.groupby("model", sort=False).agg(
            nnv=("non_vocab_params", "first"), d_model=("d_model", "first")
        )
        self.truths: dict[tuple[str, float], EmpiricalOptimum | None] = {}

    def truth(self, model: str, flops: float) -> EmpiricalOptimum | None:
        key = (model, flops)
        if key not in self.truths:
            frame = self.runs.frame
            reading = ReadingAtBudget(frame, frame[frame["model"] == model], flops)
            confidence = self.settings.options["bootstrap"]["confidence"]
            self.truths[key] = empirical_optimum(
                reading,
                frame["loss_u"].to_numpy(float),
                self.noise,
                self.settings.truth_draws,
                confidence,
            )
        return self.truths[key]

    def fit(self, holdout: Holdout) -> Estimates | str:
        try:
            return estimate_all(holdout.train, self.f, {}, self.settings.options)
        except (RunsTableError, RuntimeError, ValueError) as error:
            return str(error)

    def rows(self, holdout: Holdout) -> list[dict[str, Any]]:
        """Every approach's comparisons for one holdout."""
        estimates = self.fit(holdout)
        rows = []
        for name, (low, high) in holdout.ranges.items():
            model = self.models.loc[name].astype(object).rename(None)
            model["model"] = name
            for approach in APPROACHES:
                rows += self.approach_rows(holdout, model, approach, estimates, (low, high))
        return rows

    def approach_rows(self, holdout, model, approach, estimates, span) -> list[dict]:
        """One approach's comparisons for one held-out model: at each budget in `span` it
        answers for (approach 3: several, and the compute-optimal one; approaches 1 and 2:
        the compute-optimal one, when the held-out runs reach it)."""
        if isinstance(estimates, str) or estimates.fitted(approach) is None:
            why = (
                estimates
                if isinstance(estimates, str)
                else estimates.failed.get(approach, "not fitted")
            )
            return [
                {**_row(holdout, model, approach, None), "reason": f"could not be fitted: {why}"}
            ]
        optimal = compute_optimal_flops(estimates, model["nnv"])
        budgets = [optimal]
        if APPROACHES[approach].any_budget:  # also where 1 and 2 answer: all meet there
            count = self.settings.budgets if holdout.spread else 1
            inside = optimal is not None and span[0] <= optimal <= span[1]
            budgets = comparison_budgets(*span, count) + ([optimal] if inside else [])
        rows = []
        for flops in budgets:
            row = _row(holdout, model, approach, flops)
            if flops is None or not span[0] * (1 - 1e-9) <= flops <= span[1] * (1 + 1e-9):
                where = (
                    "unknown (approach 1 was not fitted)" if flops is None else f"{flops:.3g} FLOPs"
                )
                row["reason"] = (
                    f"its compute-optimal budget for this model, {where}, is outside the held-out "
                    f"runs' range {span[0]:.3g} to {span[1]:.3g}: not compared"
                )
                rows.append(row)
                continue
            row["distance"] = distance(flops, holdout.train.frame)
            answer = predict(estimates, model["nnv"], model["d_model"], flops, intervals=True)
            prediction = answer.approaches.get(approach)
            rows.append(_compare(row, prediction, self.truth(model["model"], flops)))
        return rows


def distance(flops: float, frame: pd.DataFrame) -> float:
    return distance_from_middle(flops, (frame["flops"].min(), frame["flops"].max()))


@dataclass
class Backtest:
    """The comparisons (one row per holdout, model, budget and approach, and the
    recommendation's) and the rule they chose."""

    comparisons: pd.DataFrame
    rule: Rule
    summary: dict[str, Any]


def recommended_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The recommendation at every comparison point, its weights chosen on the other holdouts
    only (leave one holdout out; the median of the approaches when no other holdout exists)."""
    rows = []
    answered = table.dropna(subset=["vocab_size", "flops"])
    for (kind, name), group in answered.groupby(["holdout", "held_out"], sort=False):
        others = table[(table["holdout"] != kind) | (table["held_out"] != name)]
        rule = rule_from(others) if not others.empty else fallback_rule("one holdout only")
        for _, point in group.groupby(["model", "flops"], sort=False):
            answers = dict(zip(point["approach"], point["vocab_size"]))
            combined = combine(answers, rule)
            if combined is None:
                continue
            first = point.iloc[0]
            row = {k: first[k] for k in ("holdout", "held_out", "model", "nnv", "d_model", "flops")}
            row.update(approach=RECOMMENDED, vocab_size=combined[0], distance=first["distance"])
            row.update({k: first.get(k) for k in TRUTH_COLUMNS})
            if pd.isna(first.get("empirical_problem")) and pd.notna(
                first.get("empirical_vocab_size")
            ):
                row["ln_ratio"] = math.log(combined[0] / first["empirical_vocab_size"])
            rows.append(row)
    return pd.DataFrame(rows)


#: The smallest sd of a truth's ln V counted when comparisons are weighted by its precision.
TRUTH_SD_FLOOR = 0.05
#: The z of a 90% interval's half-width: a truth's sd from its interval.
Z_90 = 1.6448536269514722


def truth_sd(rows: pd.DataFrame) -> pd.Series:
    """The sd of each truth's ln V, from its interval (1 where it has none)."""
    width = np.log(rows["empirical_high"] / rows["empirical_low"]) / (2 * Z_90)
    return width.fillna(1.0).clip(lower=TRUTH_SD_FLOOR)


def asked(rows: pd.DataFrame) -> pd.DataFrame:
    """The comparisons an approach was asked for (not those where its budget fell outside the
    held-out runs)."""
    reasons = rows["reason"].fillna("").astype(str) if "reason" in rows else ""
    return rows[~reasons.str.contains("not compared")] if "reason" in rows else rows


def rule_from(table: pd.DataFrame) -> Rule:
    """The weighting of the approaches that these comparisons support: each approach's mean
    squared ln error, every comparison weighted by the precision of its truth."""
    records = {}
    for approach, rows in table[table["approach"] != RECOMMENDED].groupby("approach", sort=False):
        compared = rows.dropna(subset=["ln_ratio"]) if "ln_ratio" in rows else rows.iloc[:0]
        mse = None
        if len(compared):
            weights = 1 / truth_sd(compared) ** 2
            mse = float(np.sum(weights * compared["ln_ratio"] ** 2) / np.sum(weights))
        questions = asked(rows)
        answered = float(questions["vocab_size"].notna().mean()) if len(questions) else 0.0
        records[approach] = Record(mse, answered)
    return weights_from_records(records)


def summarise(table: pd.DataFrame) -> dict[str, Any]:
    """Per approach (and the recommendation): comparisons, median |ln ratio|, RMS ln ratio,
    share covered, share of its predictions that were no answer (degenerate)."""
    summary = {}
    for approach, rows in table.groupby("approach", sort=False):
        ratios = rows["ln_ratio"].dropna() if "ln_ratio" in rows else pd.Series(dtype=float)
        covered = rows["covered"].dropna() if "covered" in rows else pd.Series(dtype=float)
        questions = asked(rows)
        unanswered = int(questions["vocab_size"].isna().sum())
        summary[approach] = {
            "comparisons": len(ratios),
            "median_abs_ln_ratio": float(ratios.abs().median()) if len(ratios) else None,
            "rms_ln_ratio": float(np.sqrt(np.mean(ratios**2))) if len(ratios) else None,
            "covered_share": float(covered.astype(bool).mean()) if len(covered) else None,
            "no_answer_share": unanswered / len(questions) if len(questions) else None,
        }
    return summary


def out_of_sample_error(recommended: pd.DataFrame) -> tuple[float, float] | None:
    """The recommendation's out-of-sample ln error and the distance it was measured at. Each
    ln ratio is the prediction's error plus the truth's own noise (its variance s^2, from the
    truth's interval), so the error's mean square tau^2 is estimated as in a random-effects
    meta-analysis about zero: weights 1 / (tau^2 + s^2), tau^2 = the weighted mean of
    (ratio^2 - s^2), iterated to a fixed point (Paule-Mandel). The distance is the comparisons'
    median under the same weights."""
    if recommended.empty or "ln_ratio" not in recommended:
        return None
    rows = recommended.dropna(subset=["ln_ratio"]).sort_values("distance")
    if rows.empty:
        return None
    variance = truth_sd(rows).to_numpy() ** 2
    squares = rows["ln_ratio"].to_numpy() ** 2
    tau2 = max(0.0, float(np.mean(squares - variance)))
    for _ in range(100):
        weights = 1 / (tau2 + variance)
        updated = max(0.0, float(np.sum(weights * (squares - variance)) / np.sum(weights)))
        if abs(updated - tau2) < 1e-12:
            break
        tau2 = updated
    weights = 1 / (tau2 + variance)
    middle = np.searchsorted(np.cumsum(weights) / np.sum(weights), 0.5)
    return float(np.sqrt(tau2)), float(rows["distance"].iloc[middle])


def run_backtest(runs: RunsTable, f: TokensPerCharFit, settings: BacktestSettings) -> Backtest:
    """Every holdout the table allows; the rule the comparisons choose (the median of the
    approaches, said so, when none was possible)."""
    sizes = runs.frame["non_vocab_params"].nunique()
    holdouts = model_holdouts(runs)
    cut = budget_holdout(runs, settings.fraction)
    holdouts += [cut] if cut is not None else []
    tester = Backtester(runs, f, settings)
    table = pd.DataFrame([row for holdout in holdouts for row in tester.rows(holdout)])
    if table.empty or "ln_ratio" not in table or table["ln_ratio"].notna().sum() == 0:
        why = f"{sizes} model sizes, and no held-out run could be compared"
        rule, recommended = fallback_rule(f"no backtest: {why}"), pd.DataFrame()
    else:
        rule, recommended = rule_from(table), recommended_rows(table)
        text = rule.text
        if not any(h.kind == "model" for h in holdouts):
            text += f"; with {sizes} model sizes no model could be held out, only budgets"
        error = out_of_sample_error(recommended)
        if error is None and rule.weights:
            # the recommendation, its weights chosen without each holdout, answered none of
            # them: its error is measured on the comparisons of the approaches it weighs
            error = out_of_sample_error(table[table["approach"].isin(list(rule.weights))])
            text += (
                "; its out-of-sample error from the weighted approaches' own comparisons (the "
                "recommendation, chosen without each holdout, answered none of them)"
            )
        rule = Rule(rule.weights, text, *(error or (None, None)))
    table = pd.concat([table, recommended], ignore_index=True)
    summary = {
        "holdouts": [{"kind": h.kind, "name": h.name, "models": list(h.ranges)} for h in holdouts],
        "approaches": summarise(table) if not table.empty else {},
        "rule": rule.to_json(),
        "flops_range": [float(runs.frame["flops"].min()), float(runs.frame["flops"].max())],
        "seed_sd": tester.noise.summary()["seed_sd"],
        "curvature": largest_model_curvature(tester),
    }
    return Backtest(table, rule, summary)


def largest_model_curvature(tester: Backtester) -> dict[str, Any] | None:
    """d2 L_u / d(ln V)^2 of the largest model's runs at the largest budget they all reach:
    the flat band's shape where approach 3 gives none."""
    frame = tester.runs.frame
    largest = frame[frame["non_vocab_params"] == frame["non_vocab_params"].max()]
    if largest["vocab_size"].nunique() < 3:
        return None
    model = str(largest["model"].iloc[0])
    flops = common_budget_range(largest)[1]
    truth = tester.truth(model, flops)
    if truth is None or not truth.curvature > 0:
        return None
    return {"model": model, "flops": flops, "value": truth.curvature}
