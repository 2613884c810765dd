"""Fitting on a runs table: one approach with its bootstrap (`estimate_approach`), under both
methods when asked (`estimate_with_methods`), and every approach at once (`estimate_all`)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from threadpoolctl import threadpool_limits

from vocabscale.config import defaults
from vocabscale.estimate.approaches import APPROACHES, approach_options
from vocabscale.estimate.bootstrap import bootstrap_replicates
from vocabscale.estimate.methods import other_method
from vocabscale.estimate.results import ApproachResult, Bootstrap, Estimates, FailedApproach
from vocabscale.runs.table import TARGETS, RunsTable, RunsTableError, target_table
from vocabscale.tokens_per_char import TokensPerChar, TokensPerCharFit

log = logging.getLogger(__name__)


def estimate_approach(
    approach: str,
    runs: RunsTable,
    f: TokensPerChar | TokensPerCharFit,
    options: dict[str, Any],
    bootstrap: dict[str, Any],
) -> ApproachResult:
    """One approach's fit (`options`: its params section, with `method`, the schema's default
    method when absent) with what it excluded and its bootstrap (`bootstrap`: the
    `estimate.bootstrap` section). `f` may carry the covariance of its fit, which the
    derivative approach's replicates then draw from. BLAS runs on one thread: every linear
    algebra problem here is tiny, and threads only contend."""
    with threadpool_limits(1):
        return _estimate_approach(approach, runs, f, options, bootstrap)


def _estimate_approach(approach, runs, f, options, bootstrap) -> ApproachResult:
    options = {"method": defaults("estimate.method"), **options}
    f_fit = f if isinstance(f, TokensPerCharFit) else TokensPerCharFit(f)
    fitter = APPROACHES[approach].fitter(runs, f_fit.f, **options)
    fit = fitter(runs.frame["loss_u"].to_numpy(float), f_fit.f, None, full=True)
    refits = Bootstrap([], bootstrap["confidence"])
    if bootstrap["samples"]:
        refits = bootstrap_replicates(approach, fitter, runs, f_fit, bootstrap, fit)
    return ApproachResult(
        approach, fit, options["method"], runs.excluded, len(runs.run_ids), refits
    )


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Errors only from vocabscale's loggers: a fit beside the main one repeats its warnings."""
    logger = logging.getLogger("vocabscale")
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous)


def other_target_fit(
    approach: str,
    runs: RunsTable,
    f: TokensPerChar | TokensPerCharFit,
    options: dict[str, Any],
    target: str,
) -> dict[str, Any]:
    """The approach fitted on the other `estimate.target` (L_u or bits per byte), without
    refits, so that the report can say how far V moves between the two; the error instead
    when the table cannot give it (no bpb column, say)."""
    other = next(name for name in TARGETS if name != target)
    f = f.f if isinstance(f, TokensPerCharFit) else f
    try:
        table = target_table(runs, other)
        with threadpool_limits(1), quiet():
            fitter = APPROACHES[approach].fitter(table, f, **options)
            fit = fitter(table.frame["loss_u"].to_numpy(float), f, None)
    except (RunsTableError, RuntimeError, ValueError) as error:
        return {"target": other, "error": str(error)}
    return {"target": other, **fit.refit().to_json()}


def estimate_with_methods(
    approach: str,
    runs: RunsTable,
    f: TokensPerChar | TokensPerCharFit,
    section: dict[str, Any],
    compare: bool,
) -> ApproachResult:
    """One approach under params' `estimate` section (`section`) on its `target`, the same
    fitted on the other target without refits (`other_target` in the fit's details), and with
    `compare` also under the other method, kept as `other_method` with its own bootstrap."""
    options = approach_options(section, approach)
    target = section.get("target") or defaults("estimate.target")
    fitted = target_table(runs, target)
    result = estimate_approach(approach, fitted, f, options, section["bootstrap"])
    result.fit.details["target"] = target
    result.fit.details["other_target"] = other_target_fit(approach, runs, f, options, target)
    runs = fitted
    if compare:
        other = {**options, "method": other_method(section["method"])}
        try:
            result.other_method = estimate_approach(approach, runs, f, other, section["bootstrap"])
        except (RunsTableError, RuntimeError) as error:
            log.error("%s (%s method) could not be fitted: %s", approach, other["method"], error)
            result.other_method = FailedApproach(approach, str(error), other["method"])
    return result


def estimate_all(
    runs: RunsTable,
    f: TokensPerCharFit,
    tokenization: dict[str, Any],
    options: dict[str, Any],
    compare: bool = False,
) -> Estimates:
    """Every approach (with `compare`, under both methods); an approach that cannot be fitted
    on this table is reported and left out, with the reason in `failed`."""
    estimates = Estimates({}, tokenization)
    for approach in APPROACHES:
        try:
            estimates.approaches[approach] = estimate_with_methods(
                approach, runs, f, options, compare
            )
        except (RunsTableError, RuntimeError) as error:
            estimates.failed[approach] = str(error)
            log.error("%s: %s", approach, error)
    if not estimates.approaches:
        raise RunsTableError(
            "no approach could be fitted:\n"
            + "\n".join(f"  {a}: {e}" for a, e in estimates.failed.items())
        )
    return estimates
