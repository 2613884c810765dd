"""Intervals for anything a fit gives (V for a target, the anchor, a power law), from the same
approach refitted on replicate tables (`refit_interval`, the one place intervals are made).
The replicates keep every run and redraw its noise (`vocabscale.estimate.noise`: smooth run
curves + run deviation curves + tokenizer offsets + checkpoint noise), rather than resampling
runs, which would bias the IsoFLOPs envelope, a minimum (docs/design.md, "Intervals")."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
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
    "Intervals"). Without a reference, the percentile interval. Works along axis 0."""
    values = np.log(np.asarray(replicates, dtype=float))
    tail = (1 - confidence) / 2
    if reference is None:
        low, high = np.quantile(values, [tail, 1 - tail], axis=0)
        return np.exp(low), np.exp(high)
    errors = values - np.log(reference)
    low, high = np.quantile(errors, [tail, 1 - tail], axis=0)
    return np.asarray(estimate) * np.exp(low), np.asarray(estimate) * np.exp(high)


def refit_interval(
    result: ApproachResult, value: Callable[[Fit], Any], confidence: float
) -> Interval | None:
    """The interval of `value(fit)` over an approach's bootstrap (`bootstrap_bounds`): the
    spread of the refits about the reference, placed about the main fit's value. Flagged
    refits (on a bound, at a search edge) and those `value` gives None for are left out and
    counted; a flagged main fit has no interval; a flagged reference is replaced by the
    refits' median. None when the approach has no refits."""
    if not result.refits:
        return None
    values = [v for refit in result.refits if not refit.flagged and (v := value(refit)) is not None]
    tried = result.bootstrap.tried
    estimate = None if result.fit.flagged else value(result.fit)
    if len(values) < 2 or estimate is None:
        return Interval(math.nan, math.nan, tried, tried - len(values), available=False)
    reference = None
    if result.reference is not None and not result.reference.flagged:
        reference = value(result.reference)
    if reference is None and result.bootstrap.has_reference:
        reference = np.median(np.array(values), axis=0)  # the reference fit itself is flagged
    low, high = bootstrap_bounds(estimate, np.array(values), reference, confidence)
    return Interval(low, high, tried, tried - len(values))


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
        for _ in tqdm(
            range(samples), desc=f"bootstrap {approach}", mininterval=2, leave=False, disable=None
        ):
            try:
                refits.append(fitter(noise.draw(rng), f.draw(rng), main).refit())
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
