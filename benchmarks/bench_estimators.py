"""Seconds and final objective of each estimator on a paper-like runs table.

The table: the paper's six smallest models x its ten vocabularies x 20 checkpoints (1,200 rows),
L_u from the published approach-3 law plus Gaussian noise. Each approach is fitted `--repeat`
times on it (best time kept); with `--bootstrap N` one bootstrap of N refits is timed too.
Goal (issue 3): approach 3 in at most 10 s on 2 cores.

On a machine shared with other work, set OMP_NUM_THREADS=1: OpenBLAS threads that compete for
the cores make the many tiny LAPACK calls inside scipy's Delaunay triangulation (approach 1's
cubic interpolation) 10-50x slower; the line printing the machine says which was used.

    python benchmarks/bench_estimators.py [--noise 0.005] [--repeat 3] [--bootstrap 0]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import time

import numpy as np
import scipy
from machine import cpu_model, usable_cores

from vocabscale.config import defaults
from vocabscale.estimate import parametric, synthetic
from vocabscale.estimate.approaches import APPROACHES, fit_approach
from vocabscale.estimate.bootstrap import bootstrap_replicates
from vocabscale.estimate.published import PAPER_COEFFICIENTS
from vocabscale.runs.table import prepare_runs
from vocabscale.tokens_per_char import PAPER_TOKENS_PER_CHAR


def objective_of(approach: str, fitted: dict) -> str:
    if approach == "isoflops":
        return ", ".join(
            f"{k} {v['objective']:.6g}" for k, v in fitted["fit"].items() if "r_squared" in v
        )
    if approach == "derivative":
        return f"gamma fit {fitted['exponent_fit']['fit']['objective']:.6g}"
    return f"{fitted['fit']['objective']:.6g} over {fitted['fit']['points']} points"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noise", type=float, default=0.005, help="std of the L_u noise")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--bootstrap", type=int, default=0, help="also time N bootstrap refits")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)

    print(f"machine: {cpu_model()}, {usable_cores()} cores available ({os.cpu_count()} online)")
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )
    law = PAPER_COEFFICIENTS["parametric"]
    frame = synthetic.runs_table(synthetic.parametric_law(law), noise=args.noise, seed=args.seed)
    runs = prepare_runs(frame, PAPER_TOKENS_PER_CHAR, "benchmark table")
    print(
        f"table: {len(frame)} rows = {frame['model'].nunique()} models x "
        f"{frame['vocab_size'].nunique()} vocabularies x {frame['step'].nunique()} checkpoints, "
        f"noise {args.noise}"
    )
    f = PAPER_TOKENS_PER_CHAR
    options = defaults("estimate")
    for approach in APPROACHES:
        times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            fitted = fit_approach(approach, runs, f, options[approach])
            times.append(time.perf_counter() - started)
        print(
            f"{approach:<10} {min(times):7.2f} s (best of {args.repeat}; all "
            f"{', '.join(f'{t:.2f}' for t in times)})   objective: {objective_of(approach, fitted)}"
        )
        if approach == "parametric":
            errors = ", ".join(
                f"{name} {fitted[name] / law[name] - 1:+.2%}" for name in parametric.PARAMETERS
            )
            print(f"{'':<10} recovered vs the law put in: {errors}")
        if args.bootstrap:
            started = time.perf_counter()
            replicates = bootstrap_replicates(
                approach, runs, f, options[approach], args.bootstrap, 0
            )
            print(
                f"{'':<10} bootstrap: {len(replicates)} refits in "
                f"{time.perf_counter() - started:.1f} s"
            )


if __name__ == "__main__":
    main()
