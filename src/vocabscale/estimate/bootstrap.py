"""Intervals for anything a fit gives (V for a target, the anchor, a power law), from the same
approach refitted on replicate tables (`refit_interval`, the one place intervals are made).
The replicates keep every run and redraw its noise (`vocabscale.estimate.noise`: smooth run
curves + run deviation curves + tokenizer offsets + checkpoint noise), rather than resampling
runs, which would bias the IsoFLOPs envelope, a minimum (docs/design.md, "Intervals")."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from vocabscale.estimate.approaches import Fitter
from vocabscale.estimate.noise import estimate_noise
from vocabscale.estimate.results import ApproachResult, Bootstrap, Fit, Interval
from vocabscale.runs.table import RunsTable, RunsTableError
from vocabscale.tokens_per_char import TokensPerCharFit

log = logging.getLogger(__name__)

#: Errors a refit may raise on an unlucky replicate; it is then counted as failed.
REFIT_ERRORS = (RunsTableError, RuntimeError, ValueError, np.linalg.LinAlgError)


def bootstrap_bounds(
    estimate, replicates: np.ndarray, reference, confidence: float
) -> tuple[np.ndarray, np.ndarray]:
    """Interval of a positive quantity: the estimate times the lower and upper quantiles of
    replicate / reference, the spread of the estimator's error about the estimate (not the
    basic interval, whose bias correction ran against the real error: docs/design.md,
    "Intervals"). Without a reference, the percentile interval. It always holds the
    estimate: when every replicate errs to one side, the estimate is that side's end. Works
    along axis 0."""
    values = np.log(np.asarray(replicates, dtype=float))
    tail = (1 - confidence) / 2
    estimate = np.asarray(estimate, dtype=float)
    if reference is None:
        low, high = np.exp(np.quantile(values, [tail, 1 - tail], axis=0))
        return np.minimum(low, estimate), np.maximum(high, estimate)
    errors = values - np.log(reference)
    low, high = np.quantile(errors, [tail, 1 - tail], axis=0)
    return estimate * np.exp(np.minimum(low, 0.0)), estimate * np.exp(np.maximum(high, 0.0))


@dataclass(frozen=True)
class RefitValues:
    """A quantity over an approach's bootstrap: the main fit's value (None when the fit is
    flagged), the reference's (None when it is flagged or absent), each usable refit's by its
    replicate table, and how many refits were tried."""

    estimate: Any | None
    reference: Any | None
    refits: dict[int, Any]
    tried: int
    has_reference: bool


def refit_values(result: ApproachResult, value: Callable[[Fit], Any]) -> RefitValues | None:
    """`value(fit)` of the main fit, the reference and every refit that is not flagged and
    has a value; None when the approach has no refits."""
    if not result.refits:
        return None
    refits = {
        position if refit.replicate is None else refit.replicate: v
        for position, refit in enumerate(result.refits)
        if not refit.flagged and (v := value(refit)) is not None
    }
    estimate = None if result.fit.flagged else value(result.fit)
    reference = None
    if result.reference is not None and not result.reference.flagged:
        reference = value(result.reference)
    return RefitValues(
        estimate, reference, refits, result.bootstrap.tried, result.bootstrap.has_reference
    )


def interval_of(values: RefitValues, confidence: float) -> Interval:
    """The interval of a quantity over its refits (`bootstrap_bounds`): the spread of the
    refits about the reference, placed about the estimate; the refits' median stands in for
    a flagged reference. Refits without a value are left out and counted."""
    refits = np.array(list(values.refits.values()))
    excluded = values.tried - len(refits)
    if len(refits) < 2 or values.estimate is None:
        return Interval(math.nan, math.nan, values.tried, excluded, available=False)
    reference = values.reference
    if reference is None and values.has_reference:
        reference = np.median(refits, axis=0)  # the reference fit itself is flagged
    low, high = bootstrap_bounds(values.estimate, refits, reference, confidence)
    return Interval(low, high, values.tried, excluded)


def refit_interval(
    result: ApproachResult, value: Callable[[Fit], Any], confidence: float
) -> Interval | None:
    """The interval of `value(fit)` over an approach's bootstrap: flagged refits (on a bound,
    at a search edge) and those `value` gives None for are left out and counted; a flagged
    main fit has no interval. None when the approach has no refits."""
    values = refit_values(result, value)
    return None if values is None else interval_of(values, confidence)


def bootstrap_replicates(
    approach: str,
    fitter: Fitter,
    runs: RunsTable,
    f: TokensPerCharFit,
    bootstrap: dict[str, Any],
    main: Fit,
) -> Bootstrap:
    """The reference fit and `bootstrap["samples"]` refits of one approach (each keeping what
    a prediction needs and its flags, started from the main fit), with the noise model and
    the count of failed refits."""
    samples, confidence = bootstrap["samples"], bootstrap["confidence"]
    noise = estimate_noise(runs.frame)
    rng = np.random.default_rng(bootstrap["seed"])
    logger = logging.getLogger("vocabscale")
    previous = logger.level
    logger.setLevel(logging.ERROR)  # refits repeat the main fit's warnings
    refits, failed = [], 0
    try:
        reference = fitter(noise.smooth, f.f, main).refit()
        for replicate in tqdm(
            range(samples), desc=f"bootstrap {approach}", mininterval=2, leave=False, disable=None
        ):
            try:
                refits.append(fitter(noise.draw(rng), f.draw(rng), main).refit())
                refits[-1].replicate = replicate
            except REFIT_ERRORS:
                failed += 1
    except REFIT_ERRORS as error:
        log.warning("bootstrap %s: the reference fit failed (%s); no interval", approach, error)
        return Bootstrap([], confidence, None, samples)
    finally:
        logger.setLevel(previous)
    if failed:
        log.warning("bootstrap %s: %d of %d refits failed", approach, failed, samples)
    flagged = sum(1 for refit in refits if refit.flagged)
    if flagged:
        log.warning(
            "bootstrap %s: %d of %d refits ended on a bound or at a search edge; their "
            "predictions are left out of the intervals",
            approach,
            flagged,
            samples,
        )
    return Bootstrap(refits, confidence, reference, failed, noise.summary())
