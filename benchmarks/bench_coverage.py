"""Coverage of the bootstrap intervals: how often each approach's interval holds the true
optimal V of a known law, at a target 10x beyond the largest compute trained, per scenario.

A scenario (`vocabscale.estimate.scenarios.SCENARIOS`) is a set of simulated sweeps, one design
per approach it applies to, with one departure from what the fits or the noise model assume.
`independent` is the calibration sweeps: each approach on a law it holds for, with the noise the
bootstrap assumes (a per-run offset of sd 0.005 nats and independent checkpoint noise of sd
0.003). Per approach x scenario it prints the coverage, the median interval width (high / low),
the median |ln(estimate / truth)|, the share of intervals that exclude their own estimate and
the share of failed fits.

    python benchmarks/bench_coverage.py [--scenario independent|NAME ...|all] [--sweeps 200]
        [--start 0] [--samples 200] [--jobs 2] [--records FILE.csv]

It imports whichever vocabscale is on the path: with PYTHONPATH set to an older checkout's src/
(and this checkout's synthetic.py and scenarios.py copied in) it measures that checkout's
intervals.
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
from vocabscale.estimate import scenarios, synthetic


def one_sweep(seed: int, work: tuple[tuple[str, str], ...], samples: int) -> list[dict]:
    """Every (scenario, approach) of `work` on sweep `seed`; a failed fit is a miss, shown."""
    logging.disable(logging.WARNING)
    records = []
    for name, approach in work:
        sweep = scenarios.SCENARIOS[name].sweep(approach, seed)
        try:
            record = synthetic.coverage_record(approach, sweep, samples, seed)
        except Exception as error:
            record = {"approach": approach, "covered": False, "error": repr(error)}
        records.append({"scenario": name, **record, "sweep": seed})
    return records


def summary(records: pd.DataFrame) -> pd.DataFrame:
    """One row per scenario x approach, in the registry's order."""
    rows = []
    for (name, approach), group in records.groupby(["scenario", "approach"], sort=False):
        error = group.get("error", pd.Series(np.nan, index=group.index))
        log_error = np.log(group["estimate"] / group["truth"])
        width = np.log(group["high"] / group["low"])
        rows.append(
            {
                "scenario": name,
                "approach": approach,
                "sweeps": len(group),
                "coverage": group["covered"].mean(),
                "below": (group["high"] < group["truth"]).mean(),
                "above": (group["low"] > group["truth"]).mean(),
                "median high/low": float(np.exp(np.nanmedian(width))),
                "median |ln est/truth|": float(np.nanmedian(np.abs(log_error))),
                "median est/truth": float(np.exp(np.nanmedian(log_error))),
                "excludes estimate": group.get("excludes_estimate", pd.Series(0.0)).mean(),
                "no interval": group["low"].isna().mean(),
                "failed": error.notna().mean(),
            }
        )
    order = {name: i for i, name in enumerate(scenarios.SCENARIOS)}
    table = pd.DataFrame(rows)
    return table.sort_values("scenario", key=lambda s: s.map(order), kind="stable")


def work_of(names: list[str], approaches: list[str]) -> tuple[tuple[str, str], ...]:
    """The (scenario, approach) pairs asked for: every approach a scenario has a design for."""
    chosen = list(scenarios.SCENARIOS) if names == ["all"] else names
    return tuple(
        (name, approach)
        for name in chosen
        for approach in scenarios.SCENARIOS[name].designs
        if approach in approaches
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", nargs="+", default=["independent"], help="names or all")
    parser.add_argument("--sweeps", type=int, default=200, help="sweeps 0 .. N-1 ...")
    parser.add_argument("--start", type=int, default=0, help="... from this one on")
    parser.add_argument("--samples", type=int, default=200, help="bootstrap refits per fit")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--approaches", nargs="+", default=list(synthetic.COVERAGE_SWEEPS))
    parser.add_argument(
        "--records", help="append every sweep's records to this CSV as it finishes (and resume)"
    )
    parser.add_argument("--summarize", nargs="+", help="only summarise records CSVs")
    args = parser.parse_args()
    if args.summarize:
        frame = pd.concat(map(pd.read_csv, args.summarize), ignore_index=True)
        print(summary(frame).to_string(index=False, float_format="{:.3f}".format))
        return
    print(f"machine: {cpu_model()}, {usable_cores()} cores available, load {os.getloadavg()}")
    print(
        f"python {platform.python_version()}, vocabscale from {vocabscale.__file__}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, jobs {args.jobs}"
    )
    started, cpu = time.perf_counter(), time.process_time()
    done = set()
    if args.records and os.path.exists(args.records):
        done = set(pd.read_csv(args.records)["sweep"])
    work = partial(one_sweep, work=work_of(args.scenario, args.approaches), samples=args.samples)
    records = []
    with ProcessPoolExecutor(args.jobs) as pool:
        for batch in pool.map(work, [s for s in range(args.start, args.sweeps) if s not in done]):
            records += batch
            if args.records:
                header = not os.path.exists(args.records)
                pd.DataFrame(batch).to_csv(args.records, mode="a", header=header, index=False)
    frame = pd.read_csv(args.records) if args.records else pd.DataFrame(records)
    children = os.times()
    print(
        f"{frame['sweep'].nunique()} sweeps, {args.samples} bootstrap refits each, 90% "
        f"intervals, {time.perf_counter() - started:.0f} s wall, "
        f"{children.children_user + children.children_system + time.process_time() - cpu:.0f} "
        f"s CPU, load at the end {os.getloadavg()}"
    )
    print(summary(frame).to_string(index=False, float_format="{:.3f}".format))


if __name__ == "__main__":
    main()
