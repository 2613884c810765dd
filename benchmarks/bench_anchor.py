"""Approach 2's anchor read at the smallest model's compute-optimal budget against the largest
budget every run of it reaches (`estimate.derivative.anchor_budget`): approach 2's V for 7B and
70B under each, against the law's own optimum, on sweeps where the two budgets differ.

- paper: the paper's six smallest models x ten vocabularies x 20 checkpoints, L_u from the
  published approach-3 law (the truth: that law's optimal V at the paper's budgets, 7.05e21 and
  7.05e23). Here approach 1's K1 is set by the grid's design (docs/design.md, "Intervals"), so
  the anchor is also read at the published approach-1 budget of the 33M model (`published C`),
  which separates the budget's effect from approach 1's.
- anchored: `synthetic.anchored_table`, an IsoFLOPs design plus an anchor model whose runs span
  its compute-optimal budget, from a separable law whose compute-optimal Nv is known (the truth:
  e^K2 C^gamma on the law's compute-optimal path).

Each noise-free, then with seed-to-seed and checkpoint-to-checkpoint noise over `--seeds` seeds
(the median ratio to the truth, and its 5th-95th percentiles).

    python benchmarks/bench_anchor.py [--seeds 20]
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from vocabscale.estimate import derivative, isoflops, parametric, synthetic
from vocabscale.estimate.approaches import fit_approach
from vocabscale.estimate.published import PAPER_COEFFICIENTS
from vocabscale.runs.table import prepare_runs
from vocabscale.tokens_per_char import PAPER_TOKENS_PER_CHAR

F = PAPER_TOKENS_PER_CHAR
#: (name, Nnv, d, the paper's compute-optimal budget)
TARGETS = (("7B", 7e9, 4096, 7.05e21), ("70B", 70e9, 8192, 7.05e23))
RULES = ("compute_optimal", "largest_common", "published C")


def paper_truth() -> dict[str, float]:
    law = synthetic.PAPER_LAW
    return {name: parametric.optimal_vocab(law, n, d, c)[0] for name, n, d, c in TARGETS}


def anchored_truth(gamma: float) -> dict[str, float]:
    published = PAPER_COEFFICIENTS["isoflops"]
    truth = {}
    for name, nnv, d_model, _ in TARGETS:
        budget = (nnv / np.exp(published["K1"])) ** 2
        truth[name] = float(np.exp(published["K2"]) * budget**gamma / d_model)
    return truth


def approach_2(frame: pd.DataFrame, rule: str) -> dict[str, float]:
    """Approach 2's V for each target, and the anchor's budget and V, under one rule."""
    runs = prepare_runs(frame, F)
    options = {"anchor_budget": rule}
    if rule == "published C":
        smallest = float(runs.frame["non_vocab_params"].min())
        options = {"anchor_flops": isoflops.optimal_flops(PAPER_COEFFICIENTS["isoflops"], smallest)}
    fit = fit_approach("derivative", runs, F, options).coefficients
    found = {name: derivative.predict_vocab_params(fit, n) / d for name, n, d, _ in TARGETS}
    return {**found, "budget": fit["anchor"]["flops"], "anchor V": fit["anchor"]["vocab_size"]}


def summary(name: str, rule: str, records: list[dict], truth: dict[str, float]) -> dict:
    row = {"sweep": name, "anchor budget": rule}
    table = pd.DataFrame(records)
    row["budget"] = float(table["budget"].median())
    row["anchor V"] = float(table["anchor V"].median())
    for target in truth:
        ratio = table[target] / truth[target]
        low, middle, high = np.quantile(ratio, [0.05, 0.5, 0.95])
        row[target] = float(table[target].median())
        row[f"{target} / truth"] = (
            f"{middle:.3f}" if len(table) == 1 else f"{middle:.3f} ({low:.3f}-{high:.3f})"
        )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20, help="noisy sweeps per design")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    started = time.perf_counter()
    law = synthetic.parametric_law(synthetic.PAPER_LAW)
    paper = synthetic.runs_table(law, checkpoints=20)
    anchored, gamma = synthetic.anchored_table()
    designs = (
        ("paper", paper, paper_truth(), RULES),
        ("anchored", anchored, anchored_truth(gamma), RULES[:2]),
    )
    rows = []
    with threadpool_limits(1):
        for name, clean, truth, rules in designs:
            print(f"{name}: truth " + ", ".join(f"{k} {v:,.0f}" for k, v in truth.items()))
            for rule in rules:
                rows.append(summary(name, rule, [approach_2(clean, rule)], truth))
                noisy = [
                    synthetic.add_noise(
                        clean,
                        synthetic.SEED_NOISE,
                        synthetic.CHECKPOINT_NOISE,
                        np.random.default_rng(seed),
                    )
                    for seed in range(args.seeds)
                ]
                found = [approach_2(frame, rule) for frame in noisy]
                rows.append(summary(f"{name}, noisy x{args.seeds}", rule, found, truth))
    table = pd.DataFrame(rows)
    print(table.to_markdown(index=False, floatfmt=",.4g"))
    print(f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
