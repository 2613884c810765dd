"""Stress scenarios for the bootstrap intervals (issue 24): simulated sweeps whose truth departs
from what a fit or the noise model assumes, one departure per scenario, beside the sweeps the
intervals were calibrated on (`independent`: a Gaussian offset per run, independent Gaussian
noise per checkpoint, from a law the approach holds for).

`SCENARIOS` is the registry benchmarks/bench_coverage.py and the tests read; a scenario gives,
for each approach it applies to, a noise-free design and the noise it adds, and
`Scenario.sweep(approach, seed)` is the seeded `Sweep`. Every truth is the optimal V of the
sweep's own law at the target, found numerically (`law_optimal_vocab`), also where that law is
not one the approach holds.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar

from vocabscale.accounting import width_for_nnv
from vocabscale.estimate import parametric
from vocabscale.estimate.published import PAPER_COEFFICIENTS
from vocabscale.estimate.synthetic import (
    CHECKPOINT_NOISE,
    PAPER_LAW,
    PAPER_VOCAB_SIZES,
    SEED_NOISE,
    Law,
    Model,
    Sweep,
    anchored_table,
    paper_models,
    parametric_law,
    profile_run,
    runs_table,
    separable_law,
    separable_setup,
)
from vocabscale.tokens_per_char import PAPER_TOKENS_PER_CHAR

F = PAPER_TOKENS_PER_CHAR
ISOFLOPS = PAPER_COEFFICIENTS["isoflops"]
#: How much the misspecified laws depart: the optimal Nv's log-log slope in C changes by 0.01
#: per decade of C (approaches 1 and 2); approach 3's vocabulary term bends or depends on D by
#: as much as a fit's residuals barely show (docs/design.md, "Intervals").
OPTIMUM_CURVATURE = 0.01 / (2 * np.log(10))
VOCAB_TERM_CURVATURE = 0.06
VOCAB_TOKENS_EXPONENT = 0.06


# --- noise ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Noise:
    """What a scenario adds to L_u (nats). Today's noise: an offset per run (sd `seed`) and
    independent noise per checkpoint (sd `checkpoint`), Gaussian. Departures: an offset shared
    by every run of one vocabulary size (its tokenizer, sd `vocab`; with `vocab_step`, by the
    runs whose V round to one point of a geometric grid of that ratio), a random walk along each
    run's checkpoints (sd `walk` at its last), Student-t draws of `tail_dof` degrees of freedom
    scaled to the same sd, and seed and checkpoint sds that scale as (Nnv / the geometric mean
    of the table's Nnv)^-`size_exponent`."""

    seed: float = SEED_NOISE
    checkpoint: float = CHECKPOINT_NOISE
    vocab: float = 0.0
    vocab_step: float | None = None
    walk: float = 0.0
    tail_dof: float | None = None
    size_exponent: float = 0.0


def _standard(rng: np.random.Generator, size: int, dof: float | None) -> np.ndarray:
    """Draws of unit variance: Gaussian, or Student t with `dof` degrees of freedom."""
    if dof is None:
        return rng.standard_normal(size)
    return rng.standard_t(dof, size) / np.sqrt(dof / (dof - 2))


def _walks(frame: pd.DataFrame, codes: np.ndarray, sd: float, rng) -> np.ndarray:
    """Per row, a random walk along its run's checkpoints in token order, of sd `sd` at the
    run's last: the checkpoints of one trajectory share every step before them."""
    order = np.lexsort((frame["tokens"].to_numpy(float), codes))
    counts = np.bincount(codes)
    steps = rng.standard_normal(len(frame)) * sd / np.sqrt(counts[codes[order]])
    walked = np.empty(len(frame))
    walked[order] = pd.Series(steps).groupby(codes[order]).cumsum().to_numpy()
    return walked


def noisy(frame: pd.DataFrame, noise: Noise, rng: np.random.Generator) -> pd.DataFrame:
    """The table with `noise` added to L_u. With today's noise alone it draws what
    `synthetic.add_noise` draws, number for number."""
    codes, runs = pd.factorize(frame["run_id"])
    nnv = frame["non_vocab_params"].to_numpy(float)
    scale = (nnv / np.exp(np.mean(np.log(np.unique(nnv))))) ** -noise.size_exponent
    offsets = noise.seed * _standard(rng, len(runs), noise.tail_dof)
    points = noise.checkpoint * _standard(rng, len(frame), noise.tail_dof)
    loss = frame["loss_u"].to_numpy(float) + offsets[codes] * scale + points * scale
    if noise.vocab:
        vocab = np.log(frame["vocab_size"].to_numpy(float))
        if noise.vocab_step:
            vocab = np.round(vocab / np.log(noise.vocab_step))
        tokenizers, vocabularies = pd.factorize(vocab)
        loss = loss + noise.vocab * rng.standard_normal(len(vocabularies))[tokenizers]
    if noise.walk:
        loss = loss + _walks(frame, codes, noise.walk, rng)
    return frame.assign(loss_u=loss)


# --- laws and their truth ------------------------------------------------------------------


def law_optimal_vocab(law: Law, nnv: float, d_model: float, budget: float) -> float:
    """The V that minimises the law at fixed Nnv, d and C (D = C / (6 (Nnv + V d)))."""

    def loss(log_v: float) -> float:
        nv = np.exp(log_v) * d_model
        return float(law(nnv, nv, budget / (6.0 * (nnv + nv)), budget))

    bounds = np.log(parametric.PREDICTION_VOCAB)
    found = minimize_scalar(loss, bounds=tuple(bounds), method="bounded", options={"xatol": 1e-10})
    return float(np.exp(found.x))


def curved_vocab_law(p: dict[str, float], curvature: float, reference_nv: float) -> Law:
    """Approach 3's law with a vocabulary term of another shape: A2 Nv^-a2 exp(-curvature/2
    ln(Nv / reference)^2), whose log-log slope -(a2 + curvature ln(Nv / reference)) steepens
    with Nv where approach 3's is constant."""

    def law(nnv, nv, tokens, _budget):
        bend = np.exp(-0.5 * curvature * np.log(nv / reference_nv) ** 2) - 1.0
        return parametric.loss_u(p, nnv, nv, tokens) + p["A2"] * (nv / 1e6) ** -p["alpha2"] * bend

    return law


def tokens_interaction_law(p: dict[str, float], exponent: float, reference_tokens: float) -> Law:
    """Approach 3's law with an Nv x D interaction: the vocabulary term is A2 Nv^-a2 (D /
    reference)^-exponent, so more tokens shrink what a larger vocabulary gains."""

    def law(nnv, nv, tokens, _budget):
        factor = (tokens / reference_tokens) ** -exponent - 1.0
        return parametric.loss_u(p, nnv, nv, tokens) + p["A2"] * (nv / 1e6) ** -p["alpha2"] * factor

    return law


# --- designs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Design:
    """A noise-free sweep and what it is asked: the table, the target, its law's optimal V
    (and the law, to find its optimal V for the target at another budget)."""

    frame: pd.DataFrame
    target: dict
    truth: float
    law: Law | None = None

    def truth_at(self, budget: float) -> float:
        """The law's optimal V for the target at `budget`."""
        return law_optimal_vocab(self.law, self.target["nnv"], self.target["d_model"], budget)


#: A paper-like grid: (index among the paper's six smallest shapes, its vocabulary sizes).
Layout = tuple[tuple[int, tuple[int, ...]], ...]
FULL_GRID: Layout = tuple((i, PAPER_VOCAB_SIZES) for i in range(6))
#: Few runs: three of the shapes x four vocabularies.
FEW_VOCABS = (4096, 10240, 24576, 64512)
FEW_RUNS: Layout = tuple((i, FEW_VOCABS) for i in (0, 2, 4))
#: Two vocabularies per model (none has the three a seed residual needs), staggered.
TWO_VOCABS: Layout = tuple(
    (i, (PAPER_VOCAB_SIZES[i], PAPER_VOCAB_SIZES[(i + 5) % 10])) for i in range(6)
)
#: The same, but the smallest model keeps all ten (approach 2 reads its anchor there).
TWO_VOCABS_BUT_SMALLEST: Layout = ((0, PAPER_VOCAB_SIZES), *TWO_VOCABS[1:])


def grid_table(law: Law, layout: Layout, checkpoints: int = 10) -> pd.DataFrame:
    """`synthetic.runs_table` over a layout: each model with its own vocabulary sizes."""
    shapes = paper_models(6)
    parts = [
        runs_table(law, [shapes[i]], vocab_sizes, checkpoints=checkpoints, f=F)
        for i, vocab_sizes in layout
    ]
    return pd.concat(parts, ignore_index=True)


def _models_of(layout: Layout) -> list[Model]:
    shapes = paper_models(6)
    return [shapes[i] for i, _ in layout]


@functools.cache
def parametric_design(law_name: str = "paper", layout: Layout = FULL_GRID) -> Design:
    """Approach 3's sweep: a paper-like grid from the law named (`PARAMETRIC_LAWS`); the target
    is 10x beyond the largest compute trained, Nnv on the paper's approach-1 path."""
    law = PARAMETRIC_LAWS[law_name]()
    clean = grid_table(law, layout)
    budget = 10.0 * float(clean["flops"].max())
    nnv = float(np.exp(ISOFLOPS["K1"]) * budget**0.5)
    d_model = width_for_nnv(nnv)
    target = {"name": "10x", "nnv": nnv, "d_model": d_model, "flops": budget}
    return Design(clean, target, law_optimal_vocab(law, nnv, d_model, budget), law)


def _grid_reference(column: str) -> float:
    """The geometric mean of a column over the full paper-like grid (a law's pivot)."""
    values = grid_table(parametric_law(PAPER_LAW), FULL_GRID, checkpoints=2)[column]
    return float(np.exp(np.mean(np.log(values.to_numpy(float)))))


PARAMETRIC_LAWS: dict[str, Callable[[], Law]] = {
    "paper": lambda: parametric_law(PAPER_LAW),
    "curved vocabulary term": lambda: curved_vocab_law(
        PAPER_LAW, VOCAB_TERM_CURVATURE, _grid_reference("vocab_params")
    ),
    "Nv x D interaction": lambda: tokens_interaction_law(
        PAPER_LAW, VOCAB_TOKENS_EXPONENT, _grid_reference("tokens")
    ),
}


def _compute_optimal(clean: pd.DataFrame, law: Law, k1: float) -> Design:
    """A target 10x beyond the largest compute trained, on the law's compute-optimal Nnv path
    Nnv = e^k1 C^0.5, and the law's optimal V there."""
    budget = 10.0 * float(clean["flops"].max())
    nnv = float(np.exp(k1) * budget**0.5)
    d_model = width_for_nnv(nnv)
    target = {"name": "10x", "nnv": nnv, "d_model": d_model}
    return Design(clean, target, law_optimal_vocab(law, nnv, d_model, budget), law)


@functools.cache
def separable_design(layout: Layout = FULL_GRID, curvature: float = 0.0) -> Design:
    """Approach 2's sweep (`synthetic.separable_setup` on the layout's models: a law it holds
    for), with the optimal Nv's power law bent by `curvature` about the anchor budget."""
    setup = separable_setup(_models_of(layout), F)
    bend = (curvature, float(np.log(setup.anchor_flops))) if curvature else None
    law = separable_law(setup.k1, setup.k2, setup.gamma, curvature=bend)
    return _compute_optimal(grid_table(law, layout), law, setup.k1)


@functools.cache
def anchored_design() -> Design:
    """Approach 2's calibration sweep (`synthetic.anchored_table`: an IsoFLOPs design, where
    approach 1's K1 is the law's, plus an anchor model whose runs span its compute-optimal
    budget), from the separable law it holds for."""
    clean, gamma = anchored_table(F)
    law = separable_law(ISOFLOPS["K1"], ISOFLOPS["K2"], gamma)
    return _compute_optimal(clean, law, ISOFLOPS["K1"])


SPREAD = (0.4, 0.63, 1.0, 1.6, 2.5)


@dataclass(frozen=True)
class Profiles:
    """An IsoFLOPs design (approach 1's): at each budget, runs at factors of the law's optimal
    Nnv and Nv, evaluated at fractions of the budget. `staggered`: Nnv factor i gets two Nv
    factors, i and i + 2 (modulo their count), instead of all. `curvature`: the optimal
    Nv's power law bent about the middle budget."""

    budgets: tuple[float, ...] = tuple(np.geomspace(1e17, 1e20, 6))
    nnv_factors: tuple[float, ...] = SPREAD
    nv_factors: tuple[float, ...] = SPREAD
    fractions: tuple[float, ...] = tuple(np.geomspace(0.25, 1.0, 6))
    staggered: bool = False
    curvature: float = 0.0

    def pairs(self) -> list[tuple[int, int]]:
        count = len(self.nv_factors)
        if self.staggered:
            return [
                (i, j) for i in range(len(self.nnv_factors)) for j in (i % count, (i + 2) % count)
            ]
        return [(i, j) for i in range(len(self.nnv_factors)) for j in range(count)]

    def law(self) -> Law:
        centre = float(np.mean(np.log(self.budgets)))
        bend = (self.curvature, centre) if self.curvature else None
        return separable_law(ISOFLOPS["K1"], ISOFLOPS["K2"], ISOFLOPS["gamma"], curvature=bend)


@functools.cache
def profile_design(profiles: Profiles = Profiles()) -> Design:
    """Approach 1's sweep: `profiles` from a law whose compute-optimal Nnv and Nv are the
    published approach-1 power laws (bent by its curvature). The default is
    `synthetic.profile_table`, row for row."""
    law, k1, k2, gamma = profiles.law(), ISOFLOPS["K1"], ISOFLOPS["K2"], ISOFLOPS["gamma"]
    rows = []
    for level, budget in enumerate(profiles.budgets):
        best_nnv, best_nv = np.exp(k1) * budget**0.5, np.exp(k2) * budget**gamma
        for i, j in profiles.pairs():
            nnv, nv = best_nnv * profiles.nnv_factors[i], best_nv * profiles.nv_factors[j]
            run = profile_run(law, nnv, nv, budget, profiles.fractions, F)
            run.insert(0, "run_id", f"c{level}-n{i}-v{j}")
            rows.append(run)
    return _compute_optimal(pd.concat(rows, ignore_index=True), law, k1)


# --- the registry --------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """One departure from what the fits assume: for each approach it applies to, a noise-free
    design, and the noise every one of its sweeps gets."""

    name: str
    departs: str
    designs: dict[str, Callable[[], Design]]
    noise: Noise = field(default_factory=Noise)

    def sweep(self, approach: str, seed: int) -> Sweep:
        """The scenario's sweep `seed` for one approach (noise drawn from that seed)."""
        design = self.designs[approach]()
        frame = noisy(design.frame, self.noise, np.random.default_rng(seed))
        truth_at = design.truth_at if design.law is not None else None
        name = f"{self.name}/{approach}"
        return Sweep(frame, dict(design.target), design.truth, truth_at, name)


def _standard_designs(
    isoflops: Callable[[], Design] = profile_design,
) -> dict[str, Callable[[], Design]]:
    """Each approach on the design of its calibration sweeps (`synthetic.COVERAGE_SWEEPS`)."""
    return {
        "isoflops": isoflops,
        "derivative": anchored_design,
        "parametric": parametric_design,
    }


def _on(layout: Layout, layout_for_derivative: Layout, profiles: Profiles):
    return {
        "isoflops": functools.partial(profile_design, profiles),
        "derivative": functools.partial(separable_design, layout_for_derivative),
        "parametric": functools.partial(parametric_design, "paper", layout),
    }


SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        Scenario("independent", "none: the calibration sweeps", _standard_designs()),
        Scenario(
            "vocab-shared",
            "an offset (sd 0.005) shared by the runs of one V, its tokenizer (by the runs whose "
            "V rounds to one point of a grid 2^(1/4) apart: on the paper's grid the runs of one "
            "V; approach 1's design has no two runs of one V)",
            _standard_designs(),
            Noise(vocab=0.005, vocab_step=2**0.25),
        ),
        Scenario(
            "trajectory-walk",
            "a random walk along each run's checkpoints (sd 0.004 at its last)",
            _standard_designs(),
            Noise(walk=0.004),
        ),
        Scenario(
            "heavy-tails",
            "seed and checkpoint noise Student t (3 degrees of freedom), same sd",
            _standard_designs(),
            Noise(tail_dof=3.0),
        ),
        Scenario(
            "shrinking-noise",
            "seed and checkpoint sd as Nnv^-0.25 (the same at the geometric mean Nnv)",
            _standard_designs(),
            Noise(size_exponent=0.25),
        ),
        Scenario(
            "few-runs",
            "3 models x 4 V (approach 1: 3 budgets x 3 Nnv x 4 Nv)",
            _on(
                FEW_RUNS,
                FEW_RUNS,
                Profiles(
                    budgets=(1e17, 10**18.5, 1e20),
                    nnv_factors=(0.4, 1.0, 2.5),
                    nv_factors=(0.4, 0.75, 1.4, 2.5),
                ),
            ),
        ),
        Scenario(
            "two-vocabs",
            "2 V per model, so no seed residual (approach 2: its anchor model keeps all 10 V; "
            "approach 1: 10 Nnv per budget, each with 2 of the 5 Nv)",
            _on(
                TWO_VOCABS,
                TWO_VOCABS_BUT_SMALLEST,
                Profiles(nnv_factors=tuple(np.geomspace(0.4, 2.5, 10)), staggered=True),
            ),
        ),
        Scenario(
            "paper-grid",
            "the paper's grid (6 models x 10 V, each to its own token count): approach 1's K1 "
            "follows the grid, and approach 2 reads its anchor at approach 1's budget",
            {"isoflops": separable_design, "derivative": separable_design},
        ),
        Scenario(
            "curved-optimum",
            "the optimal Nv's log-log slope in C grows by 0.01 per decade",
            {
                "isoflops": functools.partial(
                    profile_design, Profiles(curvature=OPTIMUM_CURVATURE)
                ),
                "derivative": functools.partial(separable_design, FULL_GRID, OPTIMUM_CURVATURE),
            },
        ),
        Scenario(
            "vocab-term",
            "approach 3's V term bends: log-log slope -(a2 + 0.06 ln(Nv / Nv0))",
            {"parametric": functools.partial(parametric_design, "curved vocabulary term")},
        ),
        Scenario(
            "nv-tokens",
            "an Nv x D interaction: the V term times (D / D0)^-0.06",
            {"parametric": functools.partial(parametric_design, "Nv x D interaction")},
        ),
    )
}
