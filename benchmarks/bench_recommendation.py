"""The recommendation against each single approach on simulated sweeps whose truth departs
from what some approach assumes: how far each lands from the truth 10x beyond the compute
trained (median |ln(estimate/truth)|), and how often its 90% interval holds it.

Each sweep is fitted as the pipeline does (every approach with its bootstrap), backtested on
its own largest models and budgets, and the recommendation made with the backtest's rule:

- `approach3_wrong`: a Chinchilla-like law with an Nv x C term, which approach 3's form cannot
  hold; approaches 1 and 2 hold for it (`synthetic.separable_sweep`);
- `approach1_grid`: the published approach-3 law on the paper's grid, where approach 1's
  compute-optimal relation follows the grid's design (`synthetic.parametric_sweep`);
- the stress scenarios (`vocabscale.estimate.scenarios`) whose law some approach does not
  hold: `vocab-term` and `nv-tokens` (approach 3's V term of another shape), `curved-optimum`
  (the optimal Nv's power law bends: approaches 1 and 2), `paper-grid` (approach 1's K1 is the
  grid's).

Every answer is judged against the law's optimal V at the budget it answers for (approaches 1
and 2, and the recommendation, answer at approach 1's compute-optimal budget).

    python benchmarks/bench_recommendation.py [--scenarios ...] [--sweeps 40] [--start 0]
        [--samples 60] [--jobs 2] [--records out.csv] [--summarize out.csv ...]
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

from vocabscale.config import defaults
from vocabscale.estimate import synthetic
from vocabscale.estimate.backtest import BacktestSettings, run_backtest
from vocabscale.estimate.fit import estimate_all
from vocabscale.estimate.predict import RECOMMENDED, predict
from vocabscale.estimate.scenarios import SCENARIOS
from vocabscale.runs.table import prepare_runs
from vocabscale.tokens_per_char import PAPER_TOKENS_PER_CHAR, TokensPerCharFit


def scenarios() -> dict:
    """Every sweep generator this benchmark knows, by name."""
    found = {
        "approach3_wrong": synthetic.separable_sweep,
        "approach1_grid": synthetic.parametric_sweep,
    }
    for name, approach in MISSPECIFIED.items():
        found[name] = partial(SCENARIOS[name].sweep, approach)
    return found


#: Stress scenarios whose law some approach does not hold, and the design each is drawn on.
MISSPECIFIED = {
    "vocab-term": "parametric",
    "nv-tokens": "parametric",
    "curved-optimum": "derivative",
    "paper-grid": "derivative",
}


def truth_for(sweep: synthetic.Sweep, flops: float | None) -> float:
    """The law's optimal V for the target at the budget an answer is given for."""
    if sweep.truth_at is None or flops is None or not np.isfinite(flops):
        return sweep.truth
    return float(sweep.truth_at(flops))


def one_sweep(seed: int, scenario: str, samples: int) -> list[dict]:
    """Every approach's and the recommendation's answer at one sweep's target."""
    logging.disable(logging.WARNING)
    sweep = scenarios()[scenario](seed)
    f = TokensPerCharFit(PAPER_TOKENS_PER_CHAR)
    runs = prepare_runs(sweep.frame, f.f, scenario)
    options = defaults("estimate")
    options["bootstrap"].update(samples=samples, seed=seed)
    estimates = estimate_all(runs, f, {}, options)
    estimates.backtest = run_backtest(runs, f, BacktestSettings(options, 0.5, 3, samples)).summary
    target = sweep.target
    answer = predict(estimates, target["nnv"], target["d_model"], target.get("flops"), True)
    rows = [
        record(name, p.vocab_size, p.interval.low if p.interval else np.nan,
               p.interval.high if p.interval else np.nan, truth_for(sweep, p.answer.flops))
        for name, p in answer.approaches.items()
    ]  # fmt: skip
    found = answer.recommended
    truth = truth_for(sweep, found.flops)
    rows.append(record(RECOMMENDED, found.vocab_size, found.low, found.high, truth))
    weights = estimates.backtest["rule"]["weights"] or {}
    chosen = " ".join(f"{name}={weight:.2f}" for name, weight in weights.items())
    return [{**row, "scenario": scenario, "sweep": seed, "weights": chosen} for row in rows]


def record(approach: str, estimate, low, high, truth: float) -> dict:
    answered = estimate is not None and np.isfinite(estimate)
    return {
        "approach": approach,
        "truth": truth,
        "estimate": estimate if answered else np.nan,
        "low": low,
        "high": high,
        "covered": bool(answered and low <= truth <= high),
        "holds_estimate": bool(not answered or not np.isfinite(low) or low <= estimate <= high),
    }


def summary(records: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (scenario, approach), group in records.groupby(["scenario", "approach"], sort=False):
        error = np.abs(np.log(group["estimate"] / group["truth"]))
        rows.append(
            {
                "scenario": scenario,
                "approach": approach,
                "sweeps": len(group),
                "median |ln(est/truth)|": float(np.nanmedian(error)),
                "coverage": group["covered"].mean(),
                "median high/low": float(
                    np.exp(np.nanmedian(np.log(group["high"] / group["low"])))
                ),
                "no answer": group["estimate"].isna().mean(),
                "interval without its estimate": (~group["holds_estimate"]).mean(),
            }
        )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", nargs="+", default=None)
    parser.add_argument("--sweeps", type=int, default=40, help="sweeps start .. N-1")
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--samples", type=int, default=60, help="bootstrap refits per fit")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--records", help="append every sweep's records here (and resume)")
    parser.add_argument("--summarize", nargs="+", help="only summarise records CSVs")
    args = parser.parse_args()
    if args.summarize:
        frame = pd.concat(map(pd.read_csv, args.summarize), ignore_index=True)
        print(summary(frame).to_string(index=False, float_format="{:.3f}".format))
        return
    print(f"machine: {cpu_model()}, {usable_cores()} cores available, load {os.getloadavg()}")
    print(f"python {platform.python_version()}, jobs {args.jobs}, {args.samples} refits per fit")
    started = time.perf_counter()
    names = args.scenarios or list(scenarios())
    done = set()
    if args.records and os.path.exists(args.records):
        old = pd.read_csv(args.records)
        done = set(zip(old["scenario"], old["sweep"]))
    work = [(n, s) for n in names for s in range(args.start, args.sweeps) if (n, s) not in done]
    records = []
    with ProcessPoolExecutor(args.jobs) as pool:
        calls = [pool.submit(one_sweep, s, n, args.samples) for n, s in work]
        for call in calls:
            batch = call.result()
            records += batch
            if args.records:
                header = not os.path.exists(args.records)
                pd.DataFrame(batch).to_csv(args.records, mode="a", header=header, index=False)
    frame = pd.read_csv(args.records) if args.records else pd.DataFrame(records)
    print(f"{len(work)} sweeps in {time.perf_counter() - started:.0f} s, load {os.getloadavg()}")
    print(summary(frame).to_string(index=False, float_format="{:.3f}".format))


if __name__ == "__main__":
    main()
