"""A fit with its bootstrap: the same approach refitted on runs resampled with replacement, so
that any prediction can be given an interval (`predict.bootstrap_interval`)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from tqdm import tqdm

from vocabscale.estimate.approaches import APPROACHES
from vocabscale.runs.table import RunsTable, RunsTableError
from vocabscale.tokens_per_char import TokensPerChar

log = logging.getLogger(__name__)


def bootstrap_replicates(
    approach: str,
    runs: RunsTable,
    f: TokensPerChar,
    options: dict[str, Any],
    samples: int,
    seed: int,
) -> list[dict]:
    """Refit on `samples` resamples of whole runs (with replacement); failed refits are
    skipped and counted in the log."""
    registered = APPROACHES[approach]
    rng = np.random.default_rng(seed)
    ids = runs.run_ids
    replicates, failures = [], 0
    logger = logging.getLogger("vocabscale")
    previous = logger.level
    logger.setLevel(logging.ERROR)  # refits repeat the main fit's warnings
    try:
        for _ in tqdm(
            range(samples), desc=f"bootstrap {approach}", mininterval=2, leave=False, disable=None
        ):
            sample = runs.subset(rng.choice(ids, size=len(ids), replace=True))
            try:
                fitted = registered.fit(sample, f, **options)
            except (RunsTableError, RuntimeError, ValueError, np.linalg.LinAlgError):
                failures += 1
                continue
            replicates.append(registered.replicate(fitted))
    finally:
        logger.setLevel(previous)
    if failures:
        log.warning(
            "bootstrap %s: %d of %d refits failed and were skipped", approach, failures, samples
        )
    return replicates


def estimate_approach(
    approach: str,
    runs: RunsTable,
    f: TokensPerChar,
    options: dict[str, Any],
    bootstrap: dict[str, Any],
) -> dict[str, Any]:
    """One approach's fit (`options`: its params section) with what it excluded and its
    bootstrap replicates (`bootstrap`: the `estimate.bootstrap` section)."""
    result = APPROACHES[approach].fit(runs, f, **options)
    result["approach"] = approach
    result["excluded_rows"] = runs.excluded
    result["runs"] = len(runs.run_ids)
    result["bootstrap"] = bootstrap_replicates(
        approach, runs, f, options, bootstrap["samples"], bootstrap["seed"]
    )
    result["bootstrap_confidence"] = bootstrap["confidence"]
    return result
