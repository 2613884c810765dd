"""Runs tables generated from known laws, so that tests and benchmarks can check that the
estimators recover what was put in (the columns of the runs table, paper-like scales).

Two laws are offered:

- `parametric_law`: approach 3's form, L_u = -E + A1/Nnv^a1 + A2/Nv^a2 + B/D^b (scaled units).
- `separable_law`: a Chinchilla-like loss whose minimum at every budget C lies exactly at
  Nnv = e^K1 C^0.5 and Nv = e^K2 C^gamma, so approach 1's envelope has a known answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pandas as pd

from vocabscale.accounting import PAPER_SHAPES, flops, width_for_nnv
from vocabscale.estimate import parametric
from vocabscale.estimate.published import PAPER_COEFFICIENTS
from vocabscale.tokens_per_char import PAPER_TOKENS_PER_CHAR, TokensPerChar

#: loss_u as a function of (Nnv, Nv, tokens, C), all in natural units.
Law = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


class Model(NamedTuple):
    name: str
    non_vocab_params: float
    d_model: float
    max_tokens: float


#: The paper's vocabulary grid.
PAPER_VOCAB_SIZES = (4096, 6144, 8192, 10240, 16384, 24576, 32768, 48128, 64512, 96256)


def parametric_law(p: dict[str, float]) -> Law:
    def law(nnv, nv, tokens, _flops):
        return parametric.loss_u(p, nnv, nv, tokens)

    return law


def separable_law(
    k1: float,
    k2: float,
    gamma: float,
    floor: float = 1.0,
    nnv_exponent: float = 0.35,
    nv_exponent: float = 0.7,
    nnv_term: float = 1.5,
    nv_term: float = 0.15,
    curvature: tuple[float, float] | None = None,
) -> Law:
    """A Chinchilla-like law whose compute-optimal sizes are exact power laws:
    L_u = -floor + A1 Nnv^-a + B1 (C/Nnv)^-a + A2 Nv^-a2 + B2 (C/Nv)^-b2.
    At fixed C the Nnv terms are least at Nnv = (A1/B1)^(1/2a) C^(1/2) and the Nv terms at
    Nv = (a2 A2 / (b2 B2))^(1/(a2+b2)) C^(b2/(a2+b2)); the constants are set so that these are
    e^k1 C^0.5 and e^k2 C^gamma, and the loss falls monotonically along every run.
    `nnv_term` and `nv_term` are the sizes of the A1 and A2 terms at Nnv = 1e8, Nv = 1e7.
    `curvature` (kappa, ln C0) bends the optimal Nv's power law, ln Nv = k2 + gamma ln C +
    kappa (ln C - ln C0)^2 (a law approaches 1 and 2 do not hold; Nnv's stays exact)."""
    a, a2 = nnv_exponent, nv_exponent
    b2 = a2 * gamma / (1.0 - gamma)
    a1_coef = nnv_term * 1e8**a
    b1_coef = a1_coef * np.exp(-2.0 * a * k1)
    a2_coef = nv_term * 1e7**a2
    kappa, centre = curvature or (0.0, 0.0)

    def law(nnv, nv, _tokens, budget):
        k2_at = k2 + kappa * (np.log(budget) - centre) ** 2
        b2_coef = a2 * a2_coef / (b2 * np.exp(k2_at * (a2 + b2)))
        return (
            -floor
            + a1_coef * nnv**-a
            + b1_coef * (budget / nnv) ** -a
            + a2_coef * nv**-a2
            + b2_coef * (budget / nv) ** -b2
        )

    return law


def paper_models(count: int = 6) -> list[Model]:
    """The paper's smallest `count` shapes with their maximum training tokens."""
    return [
        Model(name, shape.non_vocab_params, shape.d_model, max_tokens)
        for name, (shape, max_tokens) in list(PAPER_SHAPES.items())[:count]
    ]


def smooth_models(
    count: int, smallest: float, largest: float, tokens_per_param: float
) -> list[Model]:
    """`count` models log-spaced in Nnv with a smoothly growing width (d = 1.6 Nnv^(1/3)),
    each trained on `tokens_per_param` tokens per non-vocabulary parameter: a grid without the
    paper's width steps, fine enough to resolve an optimum between models."""
    return [
        Model(f"m{i}", float(nnv), 1.6 * nnv ** (1 / 3), tokens_per_param * nnv)
        for i, nnv in enumerate(np.geomspace(smallest, largest, count))
    ]


def runs_table(
    law: Law,
    models: list[Model] | None = None,
    vocab_sizes=PAPER_VOCAB_SIZES,
    checkpoints: int = 20,
    noise: float = 0.0,
    seed: int = 0,
    f: TokensPerChar = PAPER_TOKENS_PER_CHAR,
    first_checkpoint: float | None = None,
) -> pd.DataFrame:
    """One row per checkpoint of every (model, V) run (default: the paper's six smallest
    shapes), each trained to its maximum tokens with `checkpoints` evenly spaced evaluations,
    and L_u = law + Gaussian noise of standard deviation `noise`."""
    rng = np.random.default_rng(seed)
    parts = []
    for name, nnv, d_model, max_tokens in models or paper_models():
        if first_checkpoint is None:
            tokens = max_tokens * np.arange(1, checkpoints + 1) / checkpoints
        else:
            tokens = max_tokens * np.geomspace(first_checkpoint, 1.0, checkpoints)
        for vocab_size in vocab_sizes:
            budget = flops(nnv, vocab_size, d_model, tokens)
            nv = float(vocab_size * d_model)
            parts.append(
                pd.DataFrame(
                    {
                        "run_id": f"{name}-v{vocab_size}",
                        "model": name,
                        "vocab_size": vocab_size,
                        "d_model": d_model,
                        "non_vocab_params": nnv,
                        "vocab_params": nv,
                        "step": np.arange(1, checkpoints + 1),
                        "tokens": tokens,
                        "characters": tokens / f(vocab_size),
                        "flops": budget,
                        "loss_u": law(float(nnv), nv, tokens, budget)
                        + rng.normal(0.0, noise, checkpoints),
                        "diverged": False,
                    }
                )
            )
    return pd.concat(parts, ignore_index=True)


def isoflop_profiles(
    k1: float,
    k2: float,
    gamma: float,
    budgets,
    spread=(0.5, 1.0, 2.0),
    checkpoints=(0.25, 0.5, 1.0),
    noise: float = 0.0,
    seed: int = 0,
    f: TokensPerChar = PAPER_TOKENS_PER_CHAR,
) -> pd.DataFrame:
    """A runs table with a known IsoFLOPs envelope: for every budget C, runs with Nnv and Nv at
    the optimum of `separable_law(k1, k2, gamma)` times each factor of `spread`, trained to
    exactly C and evaluated at the given fractions of it. The optimal run's last checkpoint is
    the lowest loss at C, so the envelope follows Nnv = e^k1 C^0.5 and Nv = e^k2 C^gamma."""
    law = separable_law(k1, k2, gamma)
    rng = np.random.default_rng(seed)
    fractions = np.asarray(checkpoints, float)
    rows = []
    for level, budget in enumerate(budgets):
        best_nnv, best_nv = np.exp(k1) * budget**0.5, np.exp(k2) * budget**gamma
        for i, nnv_factor in enumerate(spread):
            for j, nv_factor in enumerate(spread):
                nnv, nv = best_nnv * nnv_factor, best_nv * nv_factor
                run = profile_run(law, nnv, nv, budget, fractions, f)
                run["loss_u"] += rng.normal(0.0, noise, len(fractions))
                run.insert(0, "run_id", f"c{level}-n{i}-v{j}")
                rows.append(run)
    return pd.concat(rows, ignore_index=True)


def profile_run(
    law: Law, nnv: float, nv: float, budget: float, fractions, f: TokensPerChar
) -> pd.DataFrame:
    """One run of an IsoFLOPs design: width d = 1.6 Nnv^(1/3), trained to exactly `budget`
    and evaluated at the given fractions of it, L_u from the law (noise-free)."""
    d_model = 1.6 * nnv ** (1 / 3)
    vocab_size = nv / d_model
    tokens = np.asarray(fractions, float) * budget / (6.0 * (nnv + nv))
    budgets_seen = flops(nnv, vocab_size, d_model, tokens)
    return pd.DataFrame(
        {
            "vocab_size": vocab_size,
            "d_model": d_model,
            "non_vocab_params": nnv,
            "vocab_params": nv,
            "step": np.arange(1, len(tokens) + 1),
            "tokens": tokens,
            "characters": tokens / f(vocab_size),
            "flops": budgets_seen,
            "loss_u": law(nnv, nv, tokens, budgets_seen),
        }
    )


# --- simulated sweeps for measuring the coverage of intervals ------------------------------

#: The published approach-3 law.
PAPER_LAW = {name: PAPER_COEFFICIENTS["parametric"][name] for name in parametric.PARAMETERS}

#: The noise of the simulated sweeps (nats of L_u): every run is offset by one draw of the
#: seed-to-seed noise, every checkpoint by an independent draw of the checkpoint-to-checkpoint
#: noise.
SEED_NOISE = 0.005
CHECKPOINT_NOISE = 0.003


class Sweep(NamedTuple):
    """A noisy runs table, the target one approach is asked about, the true optimal V (at the
    target's compute-optimal budget) and what made it (a scenario's name,
    `vocabscale.estimate.scenarios`); `truth_at(C)`: the law's optimal V for the target at
    budget C, to judge an answer given for another budget."""

    frame: pd.DataFrame
    target: dict
    truth: float
    truth_at: Callable[[float], float] | None = None
    name: str = ""


def add_noise(
    frame: pd.DataFrame, seed_sd: float, checkpoint_sd: float, rng: np.random.Generator
) -> pd.DataFrame:
    """L_u plus a per-run offset (seed-to-seed) and per-row noise (checkpoint-to-checkpoint)."""
    codes, runs = pd.factorize(frame["run_id"])
    offsets = rng.normal(0.0, seed_sd, len(runs))
    noisy = frame.copy()
    noisy["loss_u"] = frame["loss_u"] + offsets[codes] + rng.normal(0.0, checkpoint_sd, len(frame))
    return noisy


def parametric_sweep(
    seed: int, models: int = 6, checkpoints: int = 10, f: TokensPerChar = PAPER_TOKENS_PER_CHAR
) -> Sweep:
    """A paper-like sweep from the published approach-3 law; the target is 10x beyond the
    largest compute trained, with Nnv on the paper's approach-1 path, and its truth is the
    law's optimal V there (what approach 3 estimates)."""
    law = PAPER_LAW
    clean = runs_table(parametric_law(law), paper_models(models), checkpoints=checkpoints, f=f)
    frame = add_noise(clean, SEED_NOISE, CHECKPOINT_NOISE, np.random.default_rng(seed))
    budget = 10.0 * float(clean["flops"].max())
    nnv = float(np.exp(-2.4846510161625193) * budget**0.5)
    d_model = width_for_nnv(nnv)
    truth = parametric.optimal_vocab(law, nnv, d_model, budget)[0]
    target = {"name": "10x", "nnv": nnv, "d_model": d_model, "flops": budget}
    return Sweep(
        frame, target, truth, lambda at: parametric.optimal_vocab(law, nnv, d_model, at)[0]
    )


def separable_sweep(
    seed: int, models: int = 6, checkpoints: int = 10, f: TokensPerChar = PAPER_TOKENS_PER_CHAR
) -> Sweep:
    """A paper-like sweep from `separable_law`, set so that approaches 1 and 2 both hold
    (`separable_setup`). The target is 10x beyond the largest compute trained, on the law's
    compute-optimal path; its truth is the law's optimal V there."""
    setup = separable_setup(paper_models(models), f)
    law = separable_law(setup.k1, setup.k2, setup.gamma)
    clean = runs_table(law, setup.models, checkpoints=checkpoints, f=f)
    return compute_optimal_sweep(clean, seed, setup.k1, setup.k2, setup.gamma)


class SeparableSetup(NamedTuple):
    """The paper's models and a `separable_law` (k1, k2, gamma) approach 2 holds for on them,
    with the budget its anchor is read at."""

    models: list[Model]
    k1: float
    k2: float
    gamma: float
    anchor_flops: float


def separable_setup(
    design: list[Model], f: TokensPerChar = PAPER_TOKENS_PER_CHAR
) -> SeparableSetup:
    """For the models of `design` (the smallest first): the compute-optimal Nv grows as
    Nnv^gamma_d, gamma_d the derivative exponent of f over the models (so Nv = e^K2
    C^(gamma_d / 2)), and the smallest model is compute-optimal at the budget approach 2 reads
    its anchor at (the largest every run of it reaches), where its best V is 6,000."""
    from vocabscale.estimate import derivative
    from vocabscale.runs.table import width_from_runs

    grid = [m.non_vocab_params for m in design]
    width = width_from_runs(
        pd.DataFrame({"non_vocab_params": grid, "d_model": [m.d_model for m in design]})
    )
    smallest = design[0]
    exponent = derivative.fit_exponent(
        grid, width, f, 1e-3, through=(smallest.non_vocab_params, smallest.d_model)
    )["gamma"]
    gamma = exponent / 2
    anchor_budget = flops(
        smallest.non_vocab_params,
        min(PAPER_VOCAB_SIZES),
        smallest.d_model,
        smallest.max_tokens,
    )
    k1 = np.log(smallest.non_vocab_params) - 0.5 * np.log(anchor_budget)
    k2 = np.log(6000.0 * smallest.d_model) - gamma * np.log(anchor_budget)
    return SeparableSetup(design, float(k1), float(k2), float(gamma), float(anchor_budget))


def compute_optimal_sweep(
    clean: pd.DataFrame, seed: int, k1: float, k2: float, gamma: float
) -> Sweep:
    """The table with noise, and a target 10x beyond its largest compute on the law's
    compute-optimal path Nnv = e^k1 C^0.5, whose true optimal Nv is e^k2 C^gamma."""
    frame = add_noise(clean, SEED_NOISE, CHECKPOINT_NOISE, np.random.default_rng(seed))
    budget = 10.0 * float(clean["flops"].max())
    nnv = float(np.exp(k1) * budget**0.5)
    d_model = width_for_nnv(nnv)
    truth = float(np.exp(k2) * budget**gamma / d_model)
    target = {"name": "10x", "nnv": nnv, "d_model": d_model}
    return Sweep(frame, target, truth, lambda at: float(np.exp(k2) * at**gamma / d_model))


def profile_table(f: TokensPerChar = PAPER_TOKENS_PER_CHAR) -> pd.DataFrame:
    """The IsoFLOPs design `profile_sweep` measures approach 1 on, noise-free
    (`isoflop_profiles`: at 6 budgets from 1e17 to 1e20, runs at 0.4x to 2.5x the optimal Nnv
    and Nv, each evaluated at 6 checkpoints), from a law whose compute-optimal Nnv and Nv are
    the published approach-1 power laws."""
    published = PAPER_COEFFICIENTS["isoflops"]
    return isoflop_profiles(
        published["K1"],
        published["K2"],
        published["gamma"],
        np.geomspace(1e17, 1e20, 6),
        spread=(0.4, 0.63, 1.0, 1.6, 2.5),
        checkpoints=np.geomspace(0.25, 1.0, 6),
        f=f,
    )


def profile_sweep(seed: int, f: TokensPerChar = PAPER_TOKENS_PER_CHAR) -> Sweep:
    """`profile_table` with seed and checkpoint noise. The target is 10x beyond the largest
    compute trained, on the law's compute-optimal path; its truth is the law's optimal V there.

    Approach 1 is measured here rather than on the paper's grid: there its envelope is biased
    by the grid itself (docs/design.md, "Intervals"), which no interval can cover."""
    published = PAPER_COEFFICIENTS["isoflops"]
    k1, k2, gamma = published["K1"], published["K2"], published["gamma"]
    return compute_optimal_sweep(profile_table(f), seed, k1, k2, gamma)


#: Which simulated sweep measures each approach: one whose law the approach is right for.
COVERAGE_SWEEPS = {
    "isoflops": profile_sweep,
    "derivative": separable_sweep,
    "parametric": parametric_sweep,
}


def coverage_record(approach: str, sweep: Sweep, samples: int, seed: int) -> dict:
    """Fit one approach with its bootstrap on a simulated sweep; its estimate and interval at
    the target, and whether the interval covers the truth."""
    from vocabscale.config import defaults
    from vocabscale.estimate.fit import estimate_approach
    from vocabscale.estimate.predict import predictions_table
    from vocabscale.estimate.results import Estimates
    from vocabscale.runs.table import prepare_runs

    f = PAPER_TOKENS_PER_CHAR
    runs = prepare_runs(sweep.frame, f, "simulated sweep")
    bootstrap = {**defaults("estimate.bootstrap"), "samples": samples, "seed": seed}
    fitted = estimate_approach(approach, runs, f, defaults(f"estimate.{approach}"), bootstrap)
    row = predictions_table(Estimates({approach: fitted}), [sweep.target]).iloc[0]
    low, high = float(row["vocab_size_low"]), float(row["vocab_size_high"])
    estimate = float(row["vocab_size"])
    noise = fitted.bootstrap.noise or {}
    return {
        "approach": approach,
        "truth": sweep.truth,
        "estimate": estimate,
        "low": low,
        "high": high,
        "covered": bool(low <= sweep.truth <= high),
        "excludes_estimate": bool(
            np.isfinite(low) and not low * (1 - 1e-9) <= estimate <= high * (1 + 1e-9)
        ),
        "refits_excluded_share": float(row.get("refits_excluded_share", np.nan)),
        "seed_sd": noise.get("seed_sd"),
        "checkpoint_sd": noise.get("checkpoint_sd"),
    }


# --- a sweep for approach 2 read at its anchor model's compute-optimal budget -----------------

#: The anchor model of `anchored_table`: compute-optimal at this budget, its runs from a third
#: of it to three times it, ten checkpoints each, at nine V from 0.25x to 4x its optimum. Its
#: runs end below the IsoFLOPs design's first checkpoint (2.5e16), so that the two do not
#: compete on the envelope: there approach 1's K1 (a Huber median of few distinct values) moved
#: by 0.05 when the anchor model's runs reached into the design's.
ANCHOR_BUDGET = 3e15
ANCHOR_VOCAB_FACTORS = tuple(np.geomspace(0.25, 4.0, 9))


def anchor_runs(law: Law, nnv: float, vocab_sizes, f: TokensPerChar) -> pd.DataFrame:
    """The anchor model's runs: each V trained to 3 ANCHOR_BUDGET, evaluated at budgets
    log-spaced from a third of ANCHOR_BUDGET (so that it lies half way, in ln C)."""
    d_model = 1.6 * nnv ** (1 / 3)
    budgets = ANCHOR_BUDGET * np.geomspace(1 / 3, 3.0, 10)
    vocab = np.repeat(np.asarray(vocab_sizes, dtype=float), len(budgets))
    compute = np.tile(budgets, len(vocab_sizes))
    tokens = compute / (6.0 * (nnv + vocab * d_model))
    columns = {"run_id": [f"anchor-v{v:.0f}" for v in vocab], "vocab_size": vocab}
    columns.update(d_model=d_model, non_vocab_params=nnv, vocab_params=vocab * d_model)
    columns.update(step=np.tile(np.arange(1, len(budgets) + 1), len(vocab_sizes)), tokens=tokens)
    columns.update(characters=tokens / f(vocab), flops=compute)
    return pd.DataFrame(columns).assign(loss_u=law(nnv, vocab * d_model, tokens, compute))


def anchored_table(f: TokensPerChar = PAPER_TOKENS_PER_CHAR) -> tuple[pd.DataFrame, float]:
    """`profile_table`'s IsoFLOPs design (where approach 1 recovers K1) plus a smaller anchor
    model, compute-optimal at ANCHOR_BUDGET, whose V sweep spans that budget, noise-free; the
    separable law's gamma is half the derivative exponent of f over the table's models through
    the anchor model (so approach 2 holds). Returns the table and gamma."""
    from vocabscale.estimate import derivative
    from vocabscale.runs.table import width_from_runs

    published = PAPER_COEFFICIENTS["isoflops"]
    k1, k2 = published["K1"], published["K2"]
    budgets, spread = np.geomspace(1e17, 1e20, 6), (0.4, 0.63, 1.0, 1.6, 2.5)
    checkpoints = np.geomspace(0.25, 1.0, 6)
    design = isoflop_profiles(k1, k2, 0.4, budgets, spread, checkpoints, f=f)
    anchor_nnv = float(np.exp(k1) * ANCHOR_BUDGET**0.5)
    models = pd.concat(
        [
            design[["non_vocab_params", "d_model"]],
            pd.DataFrame(
                {"non_vocab_params": [anchor_nnv], "d_model": [1.6 * anchor_nnv ** (1 / 3)]}
            ),
        ]
    )
    exponent = derivative.fit_exponent(
        sorted(models["non_vocab_params"].unique()),
        width_from_runs(models),
        f,
        1e-3,
        through=(anchor_nnv, 1.6 * anchor_nnv ** (1 / 3)),
    )["gamma"]
    gamma = exponent / 2
    profiles = isoflop_profiles(k1, k2, gamma, budgets, spread, checkpoints, f=f)
    d_anchor = 1.6 * anchor_nnv ** (1 / 3)
    best_vocab = np.exp(k2) * ANCHOR_BUDGET**gamma / d_anchor
    vocab_sizes = [best_vocab * factor for factor in ANCHOR_VOCAB_FACTORS]
    anchor = anchor_runs(separable_law(k1, k2, gamma), anchor_nnv, vocab_sizes, f)
    return pd.concat([anchor, profiles], ignore_index=True), gamma


def anchored_sweep(seed: int, f: TokensPerChar = PAPER_TOKENS_PER_CHAR) -> Sweep:
    """`anchored_table` with seed and checkpoint noise; the target is 10x beyond the largest
    compute trained, on the law's compute-optimal path, and its truth the law's optimal V
    there. Approach 2 reads its anchor at the anchor model's compute-optimal budget by
    approach 1, so it holds only where approach 1 does (on `separable_sweep`'s paper grid the
    design sets approach 1's K1, docs/design.md, "Intervals")."""
    published = PAPER_COEFFICIENTS["isoflops"]
    table, gamma = anchored_table(f)
    return compute_optimal_sweep(table, seed, published["K1"], published["K2"], gamma)


COVERAGE_SWEEPS["derivative"] = anchored_sweep
