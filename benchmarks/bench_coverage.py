"""Coverage of the bootstrap intervals: how often each approach's interval holds the true
optimal V of a known law, at a target 10x beyond the largest compute trained.

Every sweep has L_u from a known law plus noise: a per-run offset (seed-to-seed, sd 0.005
nats) and per-row noise (checkpoint-to-checkpoint, sd 0.003). Each approach is measured on
sweeps from a law and a design it holds for (`vocabscale.estimate.synthetic.COVERAGE_SWEEPS`):
approach 1 on an IsoFLOPs design, approach 2 on that design plus an anchor model whose runs span
its compute-optimal budget, approach 3 on the paper's six smallest models x its ten
vocabularies x 10 checkpoints from its own law.

    python benchmarks/bench_coverage.py [--sweeps 200] [--samples 200] [--jobs 2]

It imports whichever vocabscale is on the path: with PYTHONPATH set to an older checkout's
src/ (and this checkout's synthetic.py copied in) it measures that checkout's intervals.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial

import numpy as np
import pandas as pd
from machine import cpu_model, usable_cores

import vocabscale
from vocabscale.estimate import synthetic


def one_sweep(seed: int, approaches: tuple[str, ...], samples: int) -> list[dict]:
    logging.disable(logging.WARNING)
    records = []
    for approach in approaches:
        sweep = synthetic.COVERAGE_SWEEPS[approach](seed)
        try:
            record = synthetic.coverage_record(approach, sweep, samples, seed)
        except Exception as error:  # a failed fit counts as a miss, and is shown
            record = {"approach": approach, "covered": False, "error": repr(error)}
        records.append({**record, "sweep": seed})
    return records


def summary(records: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for approach, group in records.groupby("approach", sort=False):
        log_error = np.log(group["estimate"] / group["truth"])
        width = np.log(group["high"] / group["low"])
        rows.append(
            {
                "approach": approach,
                "sweeps": len(group),
                "coverage": group["covered"].mean(),
                "missed below": (group["high"] < group["truth"]).mean(),
                "missed above": (group["low"] > group["truth"]).mean(),
                "no interval": group["low"].isna().mean(),
                "median estimate/truth": float(np.exp(np.nanmedian(log_error))),
                "median interval high/low": float(np.exp(np.nanmedian(width))),
                "failed": int(group.get("error", pd.Series(dtype=str)).notna().sum()),
            }
        )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweeps", type=int, default=200, help="sweeps 0 .. N-1 ...")
    parser.add_argument("--start", type=int, default=0, help="... from this one on")
    parser.add_argument("--samples", type=int, default=200, help="bootstrap refits per fit")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--approaches", nargs="+", default=list(synthetic.COVERAGE_SWEEPS))
    parser.add_argument(
        "--records", help="append every sweep's record to this CSV as it finishes (and resume)"
    )
    parser.add_argument("--summarize", nargs="+", help="only summarise records CSVs")
    args = parser.parse_args()
    if args.summarize:
        frame = pd.concat(map(pd.read_csv, args.summarize), ignore_index=True)
        print(f"{frame['sweep'].nunique()} sweeps")
        print(summary(frame).to_string(index=False, float_format="{:.3f}".format))
        return
    print(f"machine: {cpu_model()}, {usable_cores()} cores available, load {os.getloadavg()}")
    print(
        f"python {platform.python_version()}, vocabscale from {vocabscale.__file__}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, jobs {args.jobs}"
    )
    started = time.perf_counter()
    done = set()
    if args.records and os.path.exists(args.records):
        done = set(pd.read_csv(args.records)["sweep"])
    work = partial(one_sweep, approaches=tuple(args.approaches), samples=args.samples)
    records = []
    with ProcessPoolExecutor(args.jobs) as pool:
        for batch in pool.map(work, [s for s in range(args.start, args.sweeps) if s not in done]):
            records += batch
            if args.records:
                header = not os.path.exists(args.records)
                pd.DataFrame(batch).to_csv(args.records, mode="a", header=header, index=False)
    frame = pd.read_csv(args.records) if args.records else pd.DataFrame(records)
    print(
        f"{frame['sweep'].nunique()} sweeps, {args.samples} bootstrap refits each, 90% "
        f"intervals, {time.perf_counter() - started:.0f} s, load at the end {os.getloadavg()}"
    )
    print(summary(frame).to_string(index=False, float_format="{:.3f}".format))


if __name__ == "__main__":
    main()
