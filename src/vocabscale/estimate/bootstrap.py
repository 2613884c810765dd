"""A fit with its bootstrap: the same approach refitted on replicate tables, so that any
prediction can be given an interval (`predict.bootstrap_interval`).

The replicates are a residual bootstrap that keeps every run (docs/design.md, "Intervals").
Resampling whole runs would leave about a third of them, the ones that define the IsoFLOPs
envelope among them, out of each replicate, which biases a minimum; here each replicate has
every run at every checkpoint, with fresh noise of the size the table shows:

    L_u* = smooth_run(D) + seed offset* (one per run) + checkpoint noise* (one per row).

smooth_run is a polynomial in D^-1/2 fitted to each run's checkpoints (the "true" curves of the
bootstrap world); the checkpoint noise is resampled from their residuals, the seed offsets from
how far each run's level lies from a smooth curve in ln V through the runs of its model (both
corrected for leverage; the seed share net of what checkpoint noise explains). The same fit on
the smooth curves alone is the reference: replicate / reference is the estimator's error in the
bootstrap world, and the interval is the estimate times its quantiles (`bootstrap_bounds`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from vocabscale.config import defaults
from vocabscale.estimate.approaches import APPROACHES, METHODS, Fitter, approach_options
from vocabscale.runs.table import RunsTable, RunsTableError
from vocabscale.tokens_per_char import TokensPerChar, TokensPerCharFit

log = logging.getLogger(__name__)

#: Errors a refit may raise on an unlucky replicate; it is then counted as failed.
REFIT_ERRORS = (RunsTableError, RuntimeError, ValueError, np.linalg.LinAlgError)


def polynomial_fit(x: np.ndarray, y: np.ndarray, degree: int):
    """Least squares of y on a polynomial in x: (fitted values, leverage-corrected residuals of
    the points that have any, and a function giving (value, leverage) at a new x)."""
    centre, scale = x.mean(), x.std() or 1.0
    design = np.vander((x - centre) / scale, degree + 1)
    pseudo_inverse = np.linalg.pinv(design)
    coefficients = pseudo_inverse @ y
    fitted = design @ coefficients
    leverage = np.einsum("ij,ji->i", design, pseudo_inverse)
    free = leverage < 1 - 1e-9
    residuals = (y - fitted)[free] / np.sqrt(1 - leverage[free])

    def at(x0: float) -> tuple[float, float]:
        row = np.vander([(x0 - centre) / scale], degree + 1)[0]
        weights = row @ pseudo_inverse
        return float(weights @ y), float(weights @ weights)

    return fitted, residuals, at


@dataclass
class NoiseModel:
    """The bootstrap world: smooth run curves, and the residuals that noise is drawn from."""

    smooth: np.ndarray  # per row: its run's smoothed L_u
    run_codes: np.ndarray  # per row: its run's index
    runs: int
    checkpoint_residuals: np.ndarray
    seed_residuals: np.ndarray

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """One replicate's L_u, row for row."""
        loss = self.smooth.copy()
        if len(self.seed_residuals):
            loss += rng.choice(self.seed_residuals, self.runs)[self.run_codes]
        if len(self.checkpoint_residuals):
            loss += rng.choice(self.checkpoint_residuals, len(loss))
        return loss

    def summary(self) -> dict[str, Any]:
        def sd(values: np.ndarray) -> float | None:
            return float(np.sqrt(np.mean(values**2))) if len(values) else None

        return {
            "scheme": "residual bootstrap within runs: smooth run curves + resampled seed "
            "offsets + resampled checkpoint noise",
            "checkpoint_sd": sd(self.checkpoint_residuals),
            "seed_sd": sd(self.seed_residuals),
            "checkpoint_residuals": len(self.checkpoint_residuals),
            "seed_residuals": len(self.seed_residuals),
        }


def _centred(values: list[float] | np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    return values - values.mean() if len(values) else values


def estimate_noise(frame: pd.DataFrame) -> NoiseModel:
    """Smooth every run (a polynomial in D^-1/2, the shape of a loss law in tokens, of degree
    min(3, checkpoints // 2)); the seed offsets from each model's run levels (at the model's
    median D^-1/2) about a polynomial in ln V of degree min(3, runs - 2). A lower degree reads
    the curvature of an IsoFLOPs profile (5 runs from 0.4x to 2.5x the optimal V) as seed
    noise: 0.005 nats of it in a noise-free one, as much as the noise a sweep typically has."""
    codes, names = pd.factorize(frame["run"])
    x = frame["tokens"].to_numpy(float) ** -0.5
    y = frame["loss_u"].to_numpy(float)
    smooth = np.empty_like(y)
    checkpoint_residuals, level_at = [], {}
    for code, rows in pd.Series(np.arange(len(y))).groupby(codes).groups.items():
        rows = np.asarray(rows)
        fitted, residuals, at = polynomial_fit(x[rows], y[rows], min(3, len(rows) // 2))
        smooth[rows] = fitted
        checkpoint_residuals.extend(residuals)
        level_at[code] = at
    checkpoint = _centred(checkpoint_residuals)
    seeds, leverages = [], []
    run_rows = frame.assign(code=codes).groupby("code")
    runs = run_rows.agg(model=("non_vocab_params", "first"), vocab=("vocab_size", "first"))
    for _, model in runs.groupby("model"):
        if len(model) < 3:
            continue
        reference = float(np.median(x[np.isin(codes, model.index)]))
        levels = np.array([level_at[code](reference) for code in model.index])
        _, residuals, _ = polynomial_fit(
            np.log(model["vocab"].to_numpy(float)), levels[:, 0], min(3, len(model) - 2)
        )
        seeds.extend(residuals)
        leverages.extend(levels[:, 1])
    seed = _centred(seeds)
    if len(seed):  # the level of a run carries some checkpoint noise of its own
        total = np.mean(seed**2)
        own = np.mean(checkpoint**2) * np.mean(leverages) if len(checkpoint) else 0.0
        seed = seed * np.sqrt(max(0.0, total - own) / total) if total > 0 else seed
    return NoiseModel(smooth, codes, len(names), checkpoint, seed)


def bootstrap_bounds(
    estimate, replicates: np.ndarray, reference, confidence: float
) -> tuple[np.ndarray, np.ndarray]:
    """Interval of a positive quantity: the estimate times the lower and upper quantiles of
    replicate / reference, the spread of the estimator's error about the estimate. Without a
    reference (replicates of an older scheme), the percentile interval of the replicates.
    Works along axis 0.

    Not the basic interval (the estimate divided by those quantiles), which also subtracts
    the bias the replicates show: the bootstrap world's truth is the data smoothed, whose bias
    is not the data's, and on simulated sweeps the correction ran against the real error
    (correlation -0.64 for approach 1) and cut its coverage to 71% (docs/design.md,
    "Intervals")."""
    values = np.log(np.asarray(replicates, dtype=float))
    tail = (1 - confidence) / 2
    if reference is None:
        low, high = np.quantile(values, [tail, 1 - tail], axis=0)
        return np.exp(low), np.exp(high)
    errors = values - np.log(reference)
    low, high = np.quantile(errors, [tail, 1 - tail], axis=0)
    return np.asarray(estimate) * np.exp(low), np.asarray(estimate) * np.exp(high)


def bootstrap_replicates(
    approach: str,
    fitter: Fitter,
    runs: RunsTable,
    f: TokensPerCharFit,
    samples: int,
    seed: int,
    main: dict[str, Any],
) -> dict[str, Any]:
    """The reference fit and `samples` replicate fits of one approach (each keeping what a
    prediction needs and its flags, started from the main fit), with the noise model and the
    count of failed refits."""
    registered = APPROACHES[approach]
    noise = estimate_noise(runs.frame)
    rng = np.random.default_rng(seed)
    logger = logging.getLogger("vocabscale")
    previous = logger.level
    logger.setLevel(logging.ERROR)  # refits repeat the main fit's warnings
    replicates, failed = [], 0
    try:
        reference = registered.replicate(fitter(noise.smooth, f.f, main))
        for _ in tqdm(
            range(samples), desc=f"bootstrap {approach}", mininterval=2, leave=False, disable=None
        ):
            try:
                fitted = fitter(noise.draw(rng), f.draw(rng), main)
            except REFIT_ERRORS:
                failed += 1
                continue
            replicates.append(registered.replicate(fitted))
    except REFIT_ERRORS as error:
        log.warning("bootstrap %s: the reference fit failed (%s); no interval", approach, error)
        return {"bootstrap": [], "bootstrap_reference": None, "bootstrap_failed": samples}
    finally:
        logger.setLevel(previous)
    if failed:
        log.warning("bootstrap %s: %d of %d refits failed", approach, failed, samples)
    flagged = sum(1 for replicate in replicates if replicate.get("flags"))
    if flagged:
        log.warning(
            "bootstrap %s: %d of %d refits ended on a bound or at a search edge; their "
            "predictions are left out of the intervals",
            approach,
            flagged,
            samples,
        )
    return {
        "bootstrap": replicates,
        "bootstrap_reference": reference,
        "bootstrap_failed": failed,
        "bootstrap_noise": noise.summary(),
    }


def estimate_approach(
    approach: str,
    runs: RunsTable,
    f: TokensPerChar | TokensPerCharFit,
    options: dict[str, Any],
    bootstrap: dict[str, Any],
) -> dict[str, Any]:
    """One approach's fit (`options`: its params section, with `method`, the schema's default
    method when absent) with what it excluded and its bootstrap (`bootstrap`: the
    `estimate.bootstrap` section). `f` may carry the covariance of its fit, which the
    derivative approach's replicates then draw from. BLAS runs on one thread: every linear
    algebra problem here is tiny, and threads only contend."""
    with threadpool_limits(1):
        return _estimate_approach(approach, runs, f, options, bootstrap)


def _estimate_approach(approach, runs, f, options, bootstrap) -> dict[str, Any]:
    options = {"method": defaults("estimate.method"), **options}
    f_fit = f if isinstance(f, TokensPerCharFit) else TokensPerCharFit(f)
    fitter = APPROACHES[approach].fitter(runs, f_fit.f, **options)
    result = fitter(runs.frame["loss_u"].to_numpy(float), f_fit.f, None, full=True)
    result["approach"] = approach
    result["method"] = options["method"]
    result["excluded_rows"] = runs.excluded
    result["runs"] = len(runs.run_ids)
    if bootstrap["samples"]:
        result.update(
            bootstrap_replicates(
                approach, fitter, runs, f_fit, bootstrap["samples"], bootstrap["seed"], result
            )
        )
    else:
        result["bootstrap"] = []
    result["bootstrap_confidence"] = bootstrap["confidence"]
    return result


def other_method(method: str) -> str:
    return next(other for other in METHODS if other != method)


def estimate_with_methods(
    approach: str,
    runs: RunsTable,
    f: TokensPerChar | TokensPerCharFit,
    section: dict[str, Any],
    compare: bool,
) -> dict[str, Any]:
    """One approach under params' `estimate` section (`section`), and with `compare` also
    under the other method, kept under `other_method` with its own bootstrap."""
    options = approach_options(section, approach)
    result = estimate_approach(approach, runs, f, options, section["bootstrap"])
    if compare:
        other = {**options, "method": other_method(section["method"])}
        try:
            result["other_method"] = estimate_approach(
                approach, runs, f, other, section["bootstrap"]
            )
        except (RunsTableError, RuntimeError) as error:
            log.error("%s (%s method) could not be fitted: %s", approach, other["method"], error)
            result["other_method"] = {"method": other["method"], "error": str(error)}
    return result
