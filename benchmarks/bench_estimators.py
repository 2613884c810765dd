"""Seconds and final objective of each estimator on a paper-like runs table, and the seconds of
`vocabscale estimate` with its bootstrap.

The table: the paper's six smallest models x its ten vocabularies x 20 checkpoints (1,200 rows),
L_u from the published approach-3 law plus Gaussian noise. Each approach is fitted `--repeat`
times on it (best time kept); with `--bootstrap N` one bootstrap of N refits is timed too.
Then the whole command, `vocabscale estimate --bootstrap 200` on that table, runs `--repeat`
times: wall seconds and the CPU seconds it used (user + system), with the load average, since
other work on a shared machine stretches the wall time. Goals: approach 3 in at most 10 s on 2
cores (issue 3); the command with 200 refits in at most 10 s on 2 cores (issue 14).

On a machine shared with other work, set OMP_NUM_THREADS=1: OpenBLAS threads that compete for
the cores make the many tiny LAPACK calls inside scipy's Delaunay triangulation (approach 1's
cubic interpolation) 10-50x slower; the line printing the machine says which was used.

    python benchmarks/bench_estimators.py [--noise 0.005] [--repeat 3] [--bootstrap 0]
        [--command-bootstrap 200] [--bpb]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import scipy
from machine import cpu_model, usable_cores

from vocabscale.config import defaults
from vocabscale.estimate import parametric, synthetic
from vocabscale.estimate.approaches import APPROACHES, fit_approach
from vocabscale.estimate.fit import estimate_approach
from vocabscale.estimate.published import PAPER_COEFFICIENTS
from vocabscale.estimate.results import Fit
from vocabscale.runs.table import prepare_runs
from vocabscale.tokens_per_char import PAPER_TOKENS_PER_CHAR


def objective_of(approach: str, fitted: Fit) -> str:
    quality = fitted.quality
    if approach == "isoflops":
        return ", ".join(
            f"{k} {v['objective']:.6g}" for k, v in quality.items() if "r_squared" in v
        )
    if approach == "derivative":
        return f"gamma fit {quality['objective']:.6g}"
    return f"{quality['objective']:.6g} over {quality['points']} points"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noise", type=float, default=0.005, help="std of the L_u noise")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--bootstrap", type=int, default=0, help="also time N bootstrap refits")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--command-bootstrap", type=int, default=200, help="time the command with N refits"
    )
    parser.add_argument(
        "--bpb",
        action="store_true",
        help="give the table a bpb column (L_u + 10), so that the command also fits every "
        "approach on the other target, as on the pipeline's runs",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)

    print(f"machine: {cpu_model()}, {usable_cores()} cores available ({os.cpu_count()} online)")
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )
    law = PAPER_COEFFICIENTS["parametric"]
    frame = synthetic.runs_table(synthetic.parametric_law(law), noise=args.noise, seed=args.seed)
    if args.bpb:
        frame["bpb"] = frame["loss_u"] + 10.0
    runs = prepare_runs(frame, PAPER_TOKENS_PER_CHAR, "benchmark table")
    print(
        f"table: {len(frame)} rows = {frame['model'].nunique()} models x "
        f"{frame['vocab_size'].nunique()} vocabularies x {frame['step'].nunique()} checkpoints, "
        f"noise {args.noise}{', with bpb' if args.bpb else ''}"
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
                f"{name} {fitted.coefficients[name] / law[name] - 1:+.2%}"
                for name in parametric.PARAMETERS
            )
            print(f"{'':<10} recovered vs the law put in: {errors}")
        if args.bootstrap:
            started = time.perf_counter()
            bootstrap = {**options["bootstrap"], "samples": args.bootstrap}
            result = estimate_approach(approach, runs, f, options[approach], bootstrap)
            print(
                f"{'':<10} fit + bootstrap: {len(result.refits)} refits in "
                f"{time.perf_counter() - started:.1f} s"
            )
    if args.command_bootstrap:
        time_command(frame, args.command_bootstrap, args.repeat)


def time_command(frame, samples: int, repeat: int) -> None:
    """`vocabscale estimate --bootstrap N` on the table, as a user runs it."""
    with tempfile.TemporaryDirectory() as work:
        table = f"{work}/runs.csv"
        frame.to_csv(table, index=False)
        command = [
            sys.executable, "-m", "vocabscale", "estimate", "--runs", table,
            "--tokenization", "paper", "--bootstrap", str(samples), "--out", f"{work}/fits",
        ]  # fmt: skip
        for attempt in range(repeat):
            load = os.getloadavg()[0]
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            wall = time.perf_counter() - started
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            print(
                f"vocabscale estimate --bootstrap {samples}, run {attempt + 1}: {wall:.1f} s "
                f"wall, {cpu:.1f} s CPU (load average {load:.2f} before)"
            )


if __name__ == "__main__":
    main()
