"""The bootstrap world's noise (docs/design.md, "Intervals"): every run smoothed, and the noise
its replicates redraw, measured on the table alone.

    L_u* = smooth_run(D) + run deviation*(D) + tokenizer offset*(V) + checkpoint noise*

- checkpoint noise: resampled from the leverage-corrected residuals about each run's smooth
  curve (a polynomial in D^-1/2);
- run deviation: how far a run's smooth curve lies from its model's other runs, as a curve
  along the run: at a few reference points along D, each run's level about a polynomial in
  ln V through its model's runs. Its mean along the run is the seed-to-seed offset; its shape
  (what is left) is noise that the checkpoints of one trajectory share, measured net of what
  checkpoint noise puts there. A replicate gives every run the whole curve of a run drawn from
  the pool, so the checkpoints of one run keep sharing their noise;
- tokenizer offset: one per vocabulary size, shared by the runs of every model at that V, of
  the variance the residuals of runs at one V share across models (method of moments; the
  part of such offsets a polynomial in ln V absorbs cannot be told from the law, and is
  accounted for in that variance, not in the effects).

Where no model has the three vocabularies a seed residual needs, the seed noise cannot be
measured: it is set to SEED_BOUND_FACTOR times the checkpoint noise, and the summary says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

#: Points along each run at which its level is compared with the other runs of its model.
REFERENCE_POINTS = 4
#: Seed sd, as a multiple of the checkpoint sd, where no model has 3 vocabularies (assumed).
SEED_BOUND_FACTOR = 2.0


def polynomial_fit(x: np.ndarray, y: np.ndarray, degree: int):
    """Least squares of y on a polynomial in x: (fitted values, leverage-corrected residuals of
    the points that have any, and a function giving (value, weights on y) at new x: the
    value's variance per unit noise in y is weights @ weights)."""
    centre, scale = x.mean(), x.std() or 1.0
    design = np.vander((x - centre) / scale, degree + 1)
    pseudo_inverse = np.linalg.pinv(design)
    coefficients = pseudo_inverse @ y
    fitted = design @ coefficients
    leverage = np.einsum("ij,ji->i", design, pseudo_inverse)
    free = leverage < 1 - 1e-9
    residuals = (y - fitted)[free] / np.sqrt(1 - leverage[free])

    def at(x0) -> tuple[np.ndarray, np.ndarray]:
        rows = np.vander((np.atleast_1d(x0) - centre) / scale, degree + 1)
        weights = rows @ pseudo_inverse
        return weights @ y, weights

    return fitted, residuals, at


def residual_maker(x: np.ndarray, degree: int) -> np.ndarray:
    """I - H of a least-squares polynomial in x: the raw residuals are this times y."""
    design = np.vander((x - x.mean()) / (x.std() or 1.0), degree + 1)
    return np.eye(len(x)) - design @ np.linalg.pinv(design)


@dataclass
class RunCurves:
    """Every model's runs compared at its reference points (`model_levels`)."""

    residuals: list[np.ndarray] = field(default_factory=list)  # leverage-corrected, (runs, K)
    leak_level: list[float] = field(default_factory=list)  # checkpoint variance per unit, level
    leak_shape: list[float] = field(default_factory=list)  # ... and shape, per residual row
    level_raw: list[np.ndarray] = field(default_factory=list)  # raw residuals of mean levels
    makers: list[np.ndarray] = field(default_factory=list)  # I - H of each model's V fit
    runs: list[np.ndarray] = field(default_factory=list)  # each model's run codes
    models: int = 0  # models with at least 3 runs (those that gave residuals)
    all_models: int = 0
    degrees_of_freedom: int = 0  # of the residuals: runs less the V fits' coefficients


@dataclass
class NoiseModel:
    """The bootstrap world: smooth run curves, and the pools noise is drawn from (in units of
    the noise's sd at each model's size: `row_scale`, `run_scale` put it back)."""

    smooth: np.ndarray  # per row: its run's smoothed L_u
    run_codes: np.ndarray  # per row: its run's index
    places: tuple[np.ndarray, np.ndarray, np.ndarray]  # per row: reference points and weight
    run_vocab: np.ndarray  # per run: the index of its V
    checkpoint_residuals: np.ndarray
    row_scale: np.ndarray = field(default_factory=lambda: np.ones(0))
    run_curves: np.ndarray = field(default_factory=lambda: np.zeros((0, REFERENCE_POINTS)))
    run_scale: np.ndarray = field(default_factory=lambda: np.ones(0))
    vocab_sd: float = 0.0
    vocab_shapes: np.ndarray = field(default_factory=lambda: np.zeros(0))  # unit variance
    seed_dof: int = 0  # degrees of freedom of the run deviations' sd (0: not measured)
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def runs(self) -> int:
        return len(self.run_vocab)

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """One replicate's L_u, row for row. The draws, in this order, depend on the table
        alone, so every approach's replicate i is the same table."""
        loss = self.smooth.copy()
        if len(self.run_curves):
            scale = self.run_scale[:, None] * self._seed_uncertainty(rng)
            picked = rng.integers(len(self.run_curves), size=self.runs)
            curves = self.run_curves[picked] * scale
            low, high, weight = self.places
            rows = curves[self.run_codes]
            at = np.arange(len(loss))
            loss += rows[at, low] * (1 - weight) + rows[at, high] * weight
        if self.vocab_sd and len(self.vocab_shapes):
            offsets = self.vocab_sd * rng.choice(self.vocab_shapes, self.run_vocab.max() + 1)
            loss += offsets[self.run_vocab][self.run_codes]
        if len(self.checkpoint_residuals):
            loss += rng.choice(self.checkpoint_residuals, len(loss)) * self.row_scale
        return loss

    def _seed_uncertainty(self, rng: np.random.Generator) -> float:
        """The run deviations' sd is measured on `seed_dof` degrees of freedom, often few (a
        model's ten runs give six): each replicate draws it from that uncertainty, sd x
        sqrt(dof / chi2(dof)), so that the refits spread as a t interval would, not as if the
        sd were known."""
        return (
            float(np.sqrt(self.seed_dof / rng.chisquare(self.seed_dof))) if self.seed_dof else 1.0
        )

    def summary(self) -> dict[str, Any]:
        def sd(values: np.ndarray, scale: np.ndarray) -> float | None:
            return float(np.sqrt(np.mean(values**2) * np.mean(scale**2))) if values.size else None

        level = self.run_curves.mean(axis=1)
        return {
            "scheme": "residual bootstrap within runs: smooth run curves + resampled run "
            "deviation curves + tokenizer offsets shared by the runs of one V + resampled "
            "checkpoint noise, each at the sd of its model's size",
            "checkpoint_sd": sd(self.checkpoint_residuals, self.row_scale),
            "seed_sd": sd(level, self.run_scale),
            "trajectory_sd": sd(self.run_curves - level[:, None], self.run_scale),
            "vocab_sd": self.vocab_sd,
            "checkpoint_residuals": len(self.checkpoint_residuals),
            "seed_residuals": len(self.run_curves),
            **self.notes,
        }


def _centred(values: np.ndarray) -> np.ndarray:
    return values - values.mean(axis=0) if len(values) else values


def smooth_runs(x: np.ndarray, y: np.ndarray, codes: np.ndarray):
    """Every run smoothed (a polynomial in D^-1/2, the shape of a loss law in tokens, of degree
    min(3, checkpoints // 2)): the smooth values, the pooled checkpoint residuals with the run
    each is of, and each run's `at` (`polynomial_fit`)."""
    smooth = np.empty_like(y)
    residuals, owners, fits = [], [], {}
    for code, rows in pd.Series(np.arange(len(y))).groupby(codes).groups.items():
        rows = np.asarray(rows)
        fitted, run_residuals, at = polynomial_fit(x[rows], y[rows], min(3, len(rows) // 2))
        smooth[rows] = fitted
        residuals.extend(run_residuals)
        owners.extend([code] * len(run_residuals))
        fits[code] = at
    return smooth, _centred(np.array(residuals)), np.array(owners, int), fits


def reference_points(x: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Where one model's runs are compared: REFERENCE_POINTS values of D^-1/2 spread over the
    range every run of it spans (from the end of the runs back), or its median alone when
    they share none."""
    ranges = pd.Series(x).groupby(codes).agg(["min", "max"])
    low, high = ranges["min"].max(), ranges["max"].min()
    if not low < high:
        return np.full(REFERENCE_POINTS, np.median(x))
    return np.linspace(low, high, REFERENCE_POINTS)


def places(x: np.ndarray, points: np.ndarray):
    """Per row: the reference points either side of it and the weight of the later one."""
    span = points[-1] - points[0]
    position = np.zeros_like(x) if span <= 0 else (x - points[0]) / span * (len(points) - 1)
    position = np.clip(position, 0, len(points) - 1)
    low = np.minimum(position.astype(int), len(points) - 2)
    return low, low + 1, position - low


def _compare(curves: RunCurves, levels: np.ndarray, weights: list, log_vocab: np.ndarray):
    """One model's run levels (runs x points) about a polynomial in ln V at every point."""
    degree = min(3, len(levels) - 2)
    residuals = [polynomial_fit(log_vocab, levels[:, k], degree)[1] for k in range(levels.shape[1])]
    curves.residuals.append(np.column_stack(residuals))
    maker = residual_maker(log_vocab, degree)
    curves.makers.append(maker)
    curves.level_raw.append(maker @ levels.mean(axis=1))
    for w in weights:  # the checkpoint noise in a level: its variance per unit checkpoint variance
        level = w.mean(axis=0)
        curves.leak_level.append(float(level @ level))
        curves.leak_shape.append(float(np.einsum("ij,ij->", w, w)) / len(w) - float(level @ level))
    curves.models += 1
    curves.degrees_of_freedom += len(levels) - degree - 1


def model_levels(frame: pd.DataFrame, codes: np.ndarray, x: np.ndarray, fits: dict, vocab):
    """Every model's runs compared at its reference points (those of 3 runs or more), and
    every row's place among its run's reference points. `vocab`: each run's V."""
    curves = RunCurves()
    low, high = np.zeros(len(x), int), np.zeros(len(x), int)
    weight = np.zeros(len(x))
    for _, rows in frame.groupby("non_vocab_params").indices.items():
        points = reference_points(x[rows], codes[rows])
        low[rows], high[rows], weight[rows] = places(x[rows], points)
        curves.all_models += 1
        runs = pd.unique(codes[rows])
        if len(runs) < 3:
            continue
        evaluated = [fits[code](points) for code in runs]
        levels = np.array([value for value, _ in evaluated])
        _compare(curves, levels, [w for _, w in evaluated], np.log(vocab[runs]))
        curves.runs.append(runs)
    return curves, (low, high, weight)


def vocab_variance(curves: RunCurves, run_vocab: np.ndarray) -> float | None:
    """The variance of an offset shared by the runs of one V across models, from the products
    of residuals of runs at one V in different models, each model's V fit accounted for:
    with a_m its raw residuals summed per V and P_m = Z_m' (I - H_m) Z_m, E[a_m . a_n] =
    var tr(P_m P_n) for m != n. None where no V is shared by two models."""
    vocabularies = run_vocab.max() + 1 if len(run_vocab) else 0
    total_a, total_p = np.zeros(vocabularies), np.zeros((vocabularies, vocabularies))
    own_a, own_p = 0.0, 0.0
    for runs, raw, maker in zip(curves.runs, curves.level_raw, curves.makers):
        z = np.zeros((len(runs), vocabularies))
        z[np.arange(len(runs)), run_vocab[runs]] = 1.0
        a, p = z.T @ raw, z.T @ maker @ z
        total_a, total_p = total_a + a, total_p + p
        own_a, own_p = own_a + a @ a, own_p + np.sum(p * p)
    products, expected = total_a @ total_a - own_a, np.sum(total_p * total_p) - own_p
    if expected <= 1e-9:
        return None
    return max(0.0, float(products / expected))


def _scaled(pool: np.ndarray, observed: float, kept: float) -> np.ndarray:
    return pool * np.sqrt(kept / observed) if observed > 0 else pool


def run_deviation_pool(curves: RunCurves, checkpoint_var: float, vocab_var: float):
    """The run deviation curves replicates draw from: the level of each (its mean along the
    run) net of the tokenizer offset and of the checkpoint noise in it, and its shape net of
    the checkpoint noise the smoothing leaves there; and the level's standardized values."""
    pool = _centred(np.vstack(curves.residuals))
    level = pool.mean(axis=1, keepdims=True)
    shape = pool - level
    level_var, shape_var = float(np.mean(level**2)), float(np.mean(shape**2))
    level_kept = level_var - vocab_var - checkpoint_var * np.mean(curves.leak_level)
    shape_kept = shape_var - checkpoint_var * np.mean(curves.leak_shape)
    pool = _scaled(level, level_var, max(0.0, level_kept))
    pool = pool + _scaled(shape, shape_var, max(0.0, shape_kept))
    shapes = level[:, 0] / np.sqrt(level_var) if level_var > 0 else np.zeros(0)
    return pool, shapes


def size_scales(log_nnv: np.ndarray, values: np.ndarray, targets: np.ndarray):
    """Noise that changes with model size: its sd as a power of Nnv, fitted (weighted least
    squares of ln mean square on ln Nnv, each model weighted by its count) to the values'
    models' mean squares; 1 everywhere with fewer than 3 models. (The scale at each value, at
    each target (ln Nnv, held to the range fitted), the exponent of Nnv in the sd.)"""
    squares = pd.Series(values**2).groupby(log_nnv).agg(["mean", "size"])
    if len(squares) < 3 or not (squares["mean"] > 0).all():
        return np.ones(len(values)), np.ones(len(targets)), 0.0
    x = squares.index.to_numpy(float)
    slope, intercept = np.polyfit(x, np.log(squares["mean"]), 1, w=np.sqrt(squares["size"]))

    def sd(at: np.ndarray) -> np.ndarray:
        return np.exp(0.5 * (intercept + slope * np.clip(at, x.min(), x.max())))

    return sd(log_nnv), sd(targets), float(slope / 2)


def estimate_noise(frame: pd.DataFrame) -> NoiseModel:
    """The noise model of a runs table (module docstring): it depends on the table alone."""
    codes = pd.factorize(frame["run"])[0]
    x = frame["tokens"].to_numpy(float) ** -0.5
    smooth, checkpoint, owners, fits = smooth_runs(x, frame["loss_u"].to_numpy(float), codes)
    runs = frame.groupby(codes).agg(
        vocab=("vocab_size", "first"), nnv=("non_vocab_params", "first")
    )
    log_nnv = np.log(runs["nnv"].to_numpy(float))
    curves, where = model_levels(frame, codes, x, fits, runs["vocab"].to_numpy(float))
    scale, run_scale, exponent = size_scales(log_nnv[owners], checkpoint, log_nnv)
    model = NoiseModel(smooth, codes, where, pd.factorize(runs["vocab"])[0], checkpoint / scale)
    model.row_scale = run_scale[codes]
    model.notes["checkpoint_sd_nnv_exponent"] = exponent
    checkpoint_var = float(np.mean(checkpoint**2)) if len(checkpoint) else 0.0
    if not curves.residuals:
        model.run_curves = np.repeat(model.checkpoint_residuals[:, None], REFERENCE_POINTS, 1)
        model.run_scale = SEED_BOUND_FACTOR * run_scale
        bound = SEED_BOUND_FACTOR * checkpoint_var**0.5
        model.notes["seed_source"] = (
            "bounded, not measured: no model has 3 vocabulary sizes; the seed sd is taken as "
            f"{SEED_BOUND_FACTOR:g}x the checkpoint sd ({bound:.2g})"
        )
        return model
    model.notes["seed_source"] = (
        f"measured on the {curves.models} of {curves.all_models} models with 3 or more "
        "vocabulary sizes"
    )
    vocab_var = vocab_variance(curves, model.run_vocab)
    model.notes["vocab_source"] = (
        "not measured: no vocabulary size is shared by two models, so a tokenizer offset "
        "cannot be told from a seed offset"
        if vocab_var is None
        else "measured across models"
    )
    pool, model.vocab_shapes = run_deviation_pool(curves, checkpoint_var, vocab_var or 0.0)
    pool_nnv = np.concatenate(
        [np.repeat(log_nnv[r[0]], len(res)) for r, res in zip(curves.runs, curves.residuals)]
    )
    own, model.run_scale, exponent = size_scales(pool_nnv, np.sqrt(np.mean(pool**2, 1)), log_nnv)
    model.run_curves = pool / own[:, None]
    model.vocab_sd = float(np.sqrt(vocab_var or 0.0))
    model.seed_dof = curves.degrees_of_freedom
    model.notes["seed_sd_nnv_exponent"] = exponent
    model.notes["seed_degrees_of_freedom"] = curves.degrees_of_freedom
    return model
