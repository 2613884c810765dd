"""Fitting on a runs table: one approach with its bootstrap (`estimate_approach`), under both
methods when asked (`estimate_with_methods`), and every approach at once (`estimate_all`)."""

from __future__ import annotations

import logging
from typing import Any

from threadpoolctl import threadpool_limits

from vocabscale.config import defaults
from vocabscale.estimate.approaches import APPROACHES, approach_options
from vocabscale.estimate.bootstrap import bootstrap_replicates
from vocabscale.estimate.methods import other_method
from vocabscale.estimate.results import ApproachResult, Bootstrap, Estimates, FailedApproach
from vocabscale.runs.table import RunsTable, RunsTableError
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


def estimate_with_methods(
    approach: str,
    runs: RunsTable,
    f: TokensPerChar | TokensPerCharFit,
    section: dict[str, Any],
    compare: bool,
) -> ApproachResult:
    """One approach under params' `estimate` section (`section`), and with `compare` also
    under the other method, kept as `other_method` with its own bootstrap."""
    options = approach_options(section, approach)
    result = estimate_approach(approach, runs, f, options, section["bootstrap"])
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
