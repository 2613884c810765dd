"""What the estimators produce, as types: one fit of one approach (`Fit`), an approach with its
bootstrap refits (`ApproachResult`), every approach of one runs table (`Estimates`), and one
answer for one model (`Answer`). JSON is written and read here and nowhere else; the layout is
the one docs/design.md describes (a fit's coefficients at the top of its object)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

#: What each approach's fit needs to predict: the keys that are coefficients in its JSON.
COEFFICIENT_KEYS = {
    "isoflops": ("K1", "K2", "K3", "gamma", "nnv_exponent", "characters_exponent"),
    "derivative": ("gamma", "anchor"),
    "parametric": ("E", "A1", "A2", "B", "alpha1", "alpha2", "beta"),
}
#: The keys an approach's JSON holds besides its fit's (written after them, in this order).
RESULT_KEYS = ("approach", "method", "excluded_rows", "runs")
#: What marks a flag as degenerate: the fit ended on a parameter bound or at the edge of a
#: search, so the number it gives is a bound, not an answer.
DEGENERATE_MARKS = ("on its bound", "at the search bound")
BOOTSTRAP_KEYS = (
    "bootstrap",
    "bootstrap_reference",
    "bootstrap_failed",
    "bootstrap_noise",
    "bootstrap_confidence",
)


@dataclass
class Fit:
    """One fit of one approach: the coefficients a prediction needs, and the flags that say why
    it may not be trusted (a parameter on its bound, no convergence, a solution at a search
    edge; None where none were recorded, as for published coefficients). A main fit also
    carries `details`: its quality, options and the points it saw, in the approach's order."""

    coefficients: dict[str, Any]
    flags: list[str] | None = None
    details: dict[str, Any] = field(default_factory=dict)
    replicate: int | None = None  # a refit's replicate table: refit i of every approach saw it

    @property
    def flagged(self) -> bool:
        return bool(self.flags)

    @property
    def degenerate_reason(self) -> str | None:
        """The flag that makes this fit give no answer (a bound or a search edge), if any."""
        return next(
            (flag for flag in self.flags or [] if any(m in flag for m in DEGENERATE_MARKS)), None
        )

    @property
    def options(self) -> dict[str, Any]:
        return self.details.get("options") or {}

    @property
    def quality(self) -> dict[str, Any]:
        """The fit-quality record (approach 2: that of its exponent fit)."""
        return self.details.get("fit") or (self.details.get("exponent_fit") or {}).get("fit") or {}

    def coefficient(self, name: str, default: Any = None) -> Any:
        return self.coefficients.get(name, default)

    def detail(self, name: str) -> Any:
        return self.details.get(name)

    def refit(self) -> Fit:
        """What a bootstrap refit keeps: the coefficients (records lose their tables) and flags."""
        kept = {
            key: {k: v for k, v in value.items() if not isinstance(v, list)}
            if isinstance(value, dict)
            else value
            for key, value in self.coefficients.items()
        }
        return Fit(kept, list(self.flags or []))

    def to_json(self) -> dict[str, Any]:
        flags = {} if self.flags is None else {"flags": self.flags}
        replicate = {} if self.replicate is None else {"replicate": self.replicate}
        return {**self.coefficients, **flags, **replicate, **self.details}

    @classmethod
    def from_json(cls, approach: str, data: dict[str, Any], details: bool = True) -> Fit:
        keys = COEFFICIENT_KEYS[approach]
        others = {*keys, "flags", "replicate", *RESULT_KEYS, *BOOTSTRAP_KEYS}
        others |= {"other_method", "tokenization"}
        return cls(
            {key: data[key] for key in keys if key in data},
            None if data.get("flags") is None else list(data["flags"]),
            {k: v for k, v in data.items() if k not in others} if details else {},
            data.get("replicate"),
        )


@dataclass
class Bootstrap:
    """An approach refitted on replicate tables: the refits, the reference (the same fit on the
    smoothed runs: refit / reference is the estimator's error), how many refits failed, the
    noise model they were drawn from, and the level of the intervals made from them."""

    refits: list[Fit]
    confidence: float | None = None
    reference: Fit | None = None
    failed: int | None = None  # None: no refits were asked for
    noise: dict[str, Any] | None = None

    @property
    def tried(self) -> int:
        return len(self.refits) + int(self.failed or 0)

    @property
    def has_reference(self) -> bool:
        """Whether a reference fit was made (older estimates have none: their intervals are
        percentiles of the refits)."""
        return self.reference is not None or self.failed is not None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"bootstrap": [refit.to_json() for refit in self.refits]}
        if self.reference is not None or self.failed is not None:
            data["bootstrap_reference"] = (
                None if self.reference is None else self.reference.to_json()
            )
        if self.failed is not None:
            data["bootstrap_failed"] = self.failed
        if self.noise is not None:
            data["bootstrap_noise"] = self.noise
        if self.confidence is not None:
            data["bootstrap_confidence"] = self.confidence
        return data

    @classmethod
    def from_json(cls, approach: str, data: dict[str, Any]) -> Bootstrap:
        reference = data.get("bootstrap_reference")
        confidence = data.get("bootstrap_confidence")
        return cls(
            [
                Fit.from_json(approach, refit, details=False)
                for refit in data.get("bootstrap") or []
            ],
            None if confidence is None else float(confidence),
            None if reference is None else Fit.from_json(approach, reference, details=False),
            None if "bootstrap_failed" not in data else int(data["bootstrap_failed"]),
            data.get("bootstrap_noise"),
        )


@dataclass
class ApproachResult:
    """One approach fitted on one runs table: its fit, the method, the rows it left out, its
    bootstrap, and (`report.compare_authors`) the same approach under the other method. Bare
    coefficients (the published ones) have only a fit."""

    approach: str
    fit: Fit
    method: str | None = None
    excluded_rows: dict[str, int] | None = None
    runs: int | None = None
    bootstrap: Bootstrap | None = None
    other_method: ApproachResult | FailedApproach | None = None
    tokenization: dict[str, Any] | None = None

    @property
    def refits(self) -> list[Fit]:
        return self.bootstrap.refits if self.bootstrap else []

    @property
    def reference(self) -> Fit | None:
        return self.bootstrap.reference if self.bootstrap else None

    def to_json(self) -> dict[str, Any]:
        data = self.fit.to_json()
        if self.method is not None:
            data["approach"] = self.approach
        for key in RESULT_KEYS[1:]:
            if (value := getattr(self, key)) is not None:
                data[key] = value
        if self.bootstrap is not None:
            data.update(self.bootstrap.to_json())
        if self.other_method is not None:
            data["other_method"] = self.other_method.to_json()
        if self.tokenization is not None:
            data["tokenization"] = self.tokenization
        return data

    @classmethod
    def from_json(cls, approach: str, data: dict[str, Any]) -> ApproachResult | FailedApproach:
        if "error" in data:
            return FailedApproach.from_json(approach, data)
        other = data.get("other_method")
        return cls(
            approach,
            Fit.from_json(approach, data),
            data.get("method"),
            data.get("excluded_rows"),
            data.get("runs"),
            Bootstrap.from_json(approach, data) if "bootstrap" in data else None,
            cls.from_json(approach, other) if other else None,
            data.get("tokenization"),
        )


@dataclass
class FailedApproach:
    """An approach that could not be fitted on the table, and why."""

    approach: str
    error: str
    method: str | None = None
    tokenization: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = (
            {"method": self.method} if self.method is not None else {"approach": self.approach}
        )
        data["error"] = self.error
        if self.tokenization is not None:
            data["tokenization"] = self.tokenization
        return data

    @classmethod
    def from_json(cls, approach: str, data: dict[str, Any]) -> FailedApproach:
        return cls(approach, str(data["error"]), data.get("method"), data.get("tokenization"))


@dataclass
class Estimates:
    """Every approach fitted on one runs table and the f(V) they used (coefficients.json, an
    estimates directory, or the published coefficients); `failed` says why an approach is
    missing."""

    approaches: dict[str, ApproachResult]
    tokenization: dict[str, Any] | None = None
    failed: dict[str, str] = field(default_factory=dict)
    source: str | None = None
    backtest: dict[str, Any] | None = None  # the backtest's summary: the recommendation's rule

    def fitted(self, approach: str) -> ApproachResult | None:
        return self.approaches.get(approach)

    def fit(self, approach: str) -> Fit | None:
        result = self.approaches.get(approach)
        return None if result is None else result.fit

    @property
    def confidence(self) -> float | None:
        """The level of the stored bootstrap intervals (None where none is stored)."""
        for result in self.approaches.values():
            if result.bootstrap is not None and result.bootstrap.confidence is not None:
                return result.bootstrap.confidence
        return None

    def replace(self, approach: str, result: ApproachResult | None) -> Estimates:
        """The same estimates with one approach replaced (or removed, with None)."""
        approaches = {k: v for k, v in self.approaches.items() if k != approach}
        if result is not None:
            approaches[approach] = result
            approaches = {k: approaches[k] for k in COEFFICIENT_KEYS if k in approaches}
        return Estimates(approaches, self.tokenization, self.failed, self.source, self.backtest)

    def other_method(self) -> Estimates | None:
        """The estimates of the other method, when it was fitted (`report.compare_authors`)."""
        other = {
            name: result.other_method
            for name, result in self.approaches.items()
            if isinstance(result.other_method, ApproachResult)
        }
        return Estimates(other, self.tokenization, self.failed, self.source) if other else None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {} if self.source is None else {"source": self.source}
        data.update({name: result.to_json() for name, result in self.approaches.items()})
        if self.tokenization is not None:
            data["tokenization"] = self.tokenization
        if self.failed:
            data["failed"] = self.failed
        if self.backtest is not None:
            data["backtest"] = self.backtest
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Estimates:
        """From the coefficients.json layout: an object per approach, `tokenization`, and
        `failed` (an approach object holding `error` counts as failed)."""
        approaches, failed = {}, dict(data.get("failed") or {})
        for name in COEFFICIENT_KEYS:
            if name not in data or data[name] is None:
                continue
            result = ApproachResult.from_json(name, data[name])
            if isinstance(result, FailedApproach):
                failed[name] = result.error
            else:
                approaches[name] = result
        tokenization, source = data.get("tokenization"), data.get("source")
        return cls(approaches, tokenization, failed, source, data.get("backtest"))


@dataclass(frozen=True)
class Answer:
    """What one fit says for one model: V, Nv = V d, the budget it answers for, and whether
    its optimum lies at the edge of the V searched (then it is only a bound, not an answer)."""

    vocab_size: float
    vocab_params: float
    flops: float | None
    at_search_bound: bool = False
    edge: str | None = None  # "smallest" or "largest": which end of the V search it is at


@dataclass(frozen=True)
class Interval:
    """An interval over the bootstrap refits (`available` false, and NaN ends, when too few
    refits gave a value), and how many refits it left out (flagged, failed, or without a
    value) of all that were tried. The ends are arrays for a curve over a grid."""

    low: Any
    high: Any
    refits: int
    excluded: int
    available: bool = True

    @property
    def excluded_share(self) -> float:
        return self.excluded / self.refits if self.refits else math.nan


@dataclass(frozen=True)
class Prediction:
    """One approach's answer for one model, with its bootstrap interval (None: no refits),
    or, when the fit is degenerate or its optimum lies at a search edge, no answer and why."""

    approach: str
    method: str
    answer: Answer
    interval: Interval | None = None
    confidence: float | None = None
    reason: str | None = None  # why there is no answer

    @property
    def vocab_size(self) -> float | None:
        return None if self.reason else self.answer.vocab_size
