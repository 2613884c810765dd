"""One recommended V per target, from the approaches that answer for it: weighted by how well
each predicted the user's own held-out runs (the backtest), with an interval that covers the
out-of-sample error the backtest measured as well as the noise, and the flat band of V whose
loss is within the runs' seed-to-seed spread of the optimum (docs/design.md, "The
recommendation")."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import brentq
from scipy.stats import norm

from vocabscale.estimate import parametric
from vocabscale.estimate.bootstrap import RefitValues
from vocabscale.estimate.results import Prediction

#: An approach whose out-of-sample RMS error is over this many times the best one's gets no
#: weight: the backtest shows its law does not hold for these runs.
LEAVE_OUT_FACTOR = 2.0
#: An approach must have answered (not degenerate, budget in range) in at least this share of
#: the comparisons it was asked for to be weighted.
MIN_ANSWERED_SHARE = 0.5
#: The squared error below which approaches count as equally good (weights stay finite).
MSE_FLOOR = 1e-4


@dataclass(frozen=True)
class Rule:
    """How the approaches' answers become one: weights per approach (None: the median of those
    that answer), the out-of-sample ln error the backtest measured for this rule and how far
    (e-folds of compute from the middle of the fit) its held-out runs lay (None: no
    backtest), and the sentence that says so."""

    weights: dict[str, float] | None
    text: str
    error: float | None = None
    distance: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "weights": self.weights,
            "out_of_sample_error": self.error,
            "backtest_distance": self.distance,
            "text": self.text,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Rule:
        error, distance = data.get("out_of_sample_error"), data.get("backtest_distance")
        return cls(data.get("weights"), str(data["text"]), error, distance)

    def spread_at(self, distance: float | None) -> float | None:
        """The rule's out-of-sample ln error at a target this far from the middle of the fit:
        the backtest's, grown in proportion where the target lies farther than the backtest
        reached (power-law extrapolation errors grow with the distance)."""
        if self.error is None or distance is None or not self.distance:
            return self.error
        return self.error * max(1.0, distance / self.distance)


def distance_from_middle(flops: float, flops_range: tuple[float, float]) -> float:
    """How far a budget lies from the middle of the fitted compute range, in e-folds: the
    extrapolation the out-of-sample error grows with."""
    middle = 0.5 * (math.log(flops_range[0]) + math.log(flops_range[1]))
    return abs(math.log(flops) - middle)


def fallback_rule(why: str) -> Rule:
    return Rule(None, f"the median of the approaches that answer ({why})")


@dataclass(frozen=True)
class Record:
    """An approach's out-of-sample record in the backtest: its mean squared ln error (each
    comparison weighted by the precision of its truth; None when never compared) and the
    share of the comparisons asked of it that it answered."""

    mse: float | None
    answered: float


def weights_from_records(records: dict[str, Record]) -> Rule:
    """Inverse mean-squared out-of-sample ln error, over the approaches that answered often
    enough and whose RMS error is within LEAVE_OUT_FACTOR of the best one's."""
    left: dict[str, str] = {}
    errors = {}
    for name, record in records.items():
        if record.mse is None:
            left[name] = "never compared"
        elif record.answered < MIN_ANSWERED_SHARE:
            left[name] = f"answered only {record.answered:.0%} of its comparisons"
        else:
            errors[name] = math.sqrt(record.mse)
    if not errors:
        return fallback_rule("no approach answered for the held-out runs")
    best = min(errors.values())
    for name, rms in errors.items():
        if rms > LEAVE_OUT_FACTOR * best:
            left[name] = f"its error is {rms / best:.1f}x the best one's"
    kept = {n: 1 / max(rms**2, MSE_FLOOR) for n, rms in errors.items() if n not in left}
    total = sum(kept.values())
    weights = {name: value / total for name, value in kept.items()}
    parts = ", ".join(f"{name} {weight:.0%}" for name, weight in weights.items())
    text = f"weighted by out-of-sample accuracy on the held-out runs: {parts}"
    if left:
        text += " (left out: " + "; ".join(f"{n}: {why}" for n, why in left.items()) + ")"
    return Rule(weights, text)


def combine(answers: dict[str, float], rule: Rule) -> tuple[float, dict[str, float]] | None:
    """The rule's V from the approaches' V (weights renormalized over those that answer) and
    the weights used; None when no weighted approach answers."""
    if not answers:
        return None
    if rule.weights is None:
        return float(np.exp(np.median(np.log(list(answers.values()))))), {}
    used = {name: rule.weights[name] for name in answers if rule.weights.get(name, 0.0) > 0}
    if not used:
        return None
    total = sum(used.values())
    used = {name: weight / total for name, weight in used.items()}
    return float(np.exp(sum(w * np.log(answers[n]) for n, w in used.items()))), used


@dataclass(frozen=True)
class Recommendation:
    """The V to use for one target, its interval, the flat band and the rule that chose it;
    vocab_size None with a reason when no approach answers."""

    vocab_size: float | None
    low: float
    high: float
    band: tuple[float, float] | None
    flops: float | None
    rule: str
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"vocab_size": self.vocab_size}
        interval = None if math.isnan(self.low) else [self.low, self.high]
        data.update(
            vocab_size_interval=interval, band=None if self.band is None else list(self.band)
        )
        data.update(flops=self.flops, rule=self.rule)
        if self.reason is not None:
            data["reason"] = self.reason
        return data


def mixture_bounds(
    refits: dict[str, RefitValues], weights: dict[str, float], confidence: float
) -> tuple[float, float] | None:
    """The recommendation's noise interval in ln V: the quantiles of the mixture of the weighted
    approaches' bootstrap distributions, each approach's refits placed about its own estimate
    as its interval is (estimate x refit / reference) and given its weight. A mixture, not the
    weighted mean of each replicate's answers: that would keep the noise and drop the
    approaches' disagreement, which is model uncertainty the answer carries (on a paper-like
    table two approaches 17% apart gave a mean whose interval held neither's truth). None when
    a weighted approach has no usable refits."""
    logs, masses = [], []
    for name, weight in weights.items():
        values = refits.get(name)
        if values is None or values.estimate is None or len(values.refits) < 2:
            return None
        draws = np.log(np.asarray(list(values.refits.values()), dtype=float))
        reference = values.reference
        centre = np.median(draws) if reference is None else math.log(reference)
        logs.append(math.log(values.estimate) + draws - centre)
        masses.append(np.full(len(draws), weight / len(draws)))
    order = np.argsort(np.concatenate(logs))
    placed, mass = np.concatenate(logs)[order], np.concatenate(masses)[order]
    cumulative = (np.cumsum(mass) - mass / 2) / mass.sum()
    tail = (1 - confidence) / 2
    return tuple(float(np.interp(q, cumulative, placed)) for q in (tail, 1 - tail))


def recommend(
    predictions: dict[str, Prediction],
    rule: Rule,
    budget: float | None,
    distance: float | None,
    confidence: float,
    refits: dict[str, RefitValues] | None = None,
) -> Recommendation:
    """The recommendation from the approaches' predictions for one target at `budget`: only
    answers for that budget count (approaches 1 and 2 answer for the compute-optimal one).
    Its noise interval is the mixture of the weighted approaches' bootstrap distributions
    (`refits`, per approach; `mixture_bounds`), widened in quadrature by the rule's
    out-of-sample error at this target's `distance` (e-folds of compute from the middle of
    the fitted range)."""
    answers = {
        name: p.vocab_size
        for name, p in predictions.items()
        if p.vocab_size is not None and _same_budget(p.answer.flops, budget)
    }
    combined = combine(answers, rule)
    if combined is None:
        why = "; ".join(f"{n}: {p.reason}" for n, p in predictions.items() if p.reason)
        reason = "no approach answers for this budget" + (f" ({why})" if why else "")
        return Recommendation(None, math.nan, math.nan, None, budget, rule.text, reason)
    value = combined[0]
    low = high = math.nan
    weights = combined[1] or {name: 1.0 / len(answers) for name in answers}
    bounds = mixture_bounds(refits or {}, weights, confidence)
    if bounds is not None:  # the interval always holds the recommendation
        low, high = max(0.0, math.log(value) - bounds[0]), max(0.0, bounds[1] - math.log(value))
    error = rule.spread_at(distance)
    if error is not None:
        spread = norm.ppf(0.5 + confidence / 2) * error
        low, high = (math.hypot(0.0 if math.isnan(h) else h, spread) for h in (low, high))
    return Recommendation(
        value, value * math.exp(-low), value * math.exp(high), None, budget, rule.text
    )


def _same_budget(flops: float | None, budget: float | None) -> bool:
    return flops is None or budget is None or abs(math.log(flops / budget)) < 1e-6


def round_band(low: float, high: float, centre: float, multiple: int) -> tuple[int, int]:
    """The band rounded inwards to multiples (the hardware-friendly V inside it); the
    multiple nearest the centre when the band holds none."""
    lo, hi = multiple * math.ceil(low / multiple), multiple * math.floor(high / multiple)
    if lo > hi:
        lo = hi = max(multiple, multiple * round(centre / multiple))
    return int(lo), int(hi)


def parametric_band(
    coefficients: dict[str, float], nnv: float, d_model: float, flops: float, tolerance: float
) -> tuple[float, float] | None:
    """The V, relative to approach 3's own optimum, whose approach-3 loss at this budget lies
    within `tolerance` of the optimum's: (lowest ratio, highest ratio), open ends at the V
    searched. None when approach 3 has no interior optimum here."""
    optimum, at_bound = parametric.optimal_vocab(coefficients, nnv, d_model, flops)
    if at_bound:
        return None

    def excess(log_ratio: float) -> float:
        v = optimum * math.exp(log_ratio)
        tokens = flops / (6.0 * (nnv + v * d_model))
        best = parametric.loss_u(
            coefficients, nnv, optimum * d_model, flops / (6.0 * (nnv + optimum * d_model))
        )
        return float(parametric.loss_u(coefficients, nnv, v * d_model, tokens) - best - tolerance)

    ends = []
    for limit in (
        math.log(parametric.PREDICTION_VOCAB[0] / optimum),
        math.log(parametric.PREDICTION_VOCAB[1] / optimum),
    ):
        ends.append(brentq(excess, 0.0, limit) if excess(limit) > 0 else limit)
    return math.exp(ends[0]), math.exp(ends[1])


def curvature_band(curvature: float, tolerance: float) -> tuple[float, float] | None:
    """The same from a quadratic in ln V of this curvature (d2 L_u / d(ln V)^2)."""
    if not curvature > 0:
        return None
    half = math.sqrt(2 * tolerance / curvature)
    return math.exp(-half), math.exp(half)
