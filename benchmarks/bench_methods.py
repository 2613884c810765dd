"""The corrected method against the authors' scripts on a paper-like table: what each
difference does to the predicted V of 7B and 70B, and both methods' V with intervals.

The table has the authors' published layout (exp_data.csv: vocab_size, embed_dim,
num_characters, Non_vocab_parameters, FLOPs, Lossu): the paper's six smallest models x its ten
vocabularies x 20 checkpoints, L_u from the published approach-3 law with seed-to-seed (0.005)
and checkpoint-to-checkpoint (0.003) noise. It is written to --table, and both methods are then
run on it exactly as a user would:

    vocabscale estimate --runs TABLE --tokenization paper --column embed_dim=d_model \\
        --column num_characters=characters --column Non_vocab_parameters=non_vocab_params \\
        --column FLOPs=flops --column Lossu=loss_u [--method authors] --out DIR

    python benchmarks/bench_methods.py [--table exp_data.csv] [--samples 200]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from machine import cpu_model, usable_cores
from threadpoolctl import threadpool_limits

from vocabscale.config import defaults
from vocabscale.estimate import isoflops, synthetic
from vocabscale.estimate.approaches import approach_options, fit_approach
from vocabscale.estimate.methods import method_named
from vocabscale.estimate.predict import predict_one
from vocabscale.estimate.results import ApproachResult, Estimates, Fit
from vocabscale.runs.table import prepare_runs
from vocabscale.tokens_per_char import PAPER_TOKENS_PER_CHAR

F = PAPER_TOKENS_PER_CHAR
COLUMNS = {
    "embed_dim": "d_model",
    "num_characters": "characters",
    "Non_vocab_parameters": "non_vocab_params",
    "FLOPs": "flops",
    "Lossu": "loss_u",
}
#: (name, Nnv, d, the paper's compute-optimal budget, approach 3's budget in the comparisons)
TARGETS = (("7B", 7e9, 4096, 7.05e21), ("70B", 70e9, 8192, 7.05e23))
LARGEST = {"anchor_budget": "largest_common"}


def paper_like_table(seed: int) -> pd.DataFrame:
    clean = synthetic.runs_table(synthetic.parametric_law(synthetic.PAPER_LAW), checkpoints=20)
    noisy = synthetic.add_noise(
        clean, synthetic.SEED_NOISE, synthetic.CHECKPOINT_NOISE, np.random.default_rng(seed)
    )
    layout = {ours: theirs for theirs, ours in COLUMNS.items()}
    return noisy.rename(columns=layout)[["vocab_size", *COLUMNS]]


def vocab(fitted: Fit, approach: str, nnv: float, d_model: float, budget: float) -> float:
    estimates = Estimates({approach: ApproachResult(approach, fitted)})
    return predict_one(estimates, approach, nnv, d_model, budget).vocab_size


def isoflops_variant(runs, densify_method: str, fit_method: str) -> Fit:
    """Approach 1 with one method's densification and the other's (or its own) fits."""
    options = {**approach_options(defaults("estimate"), "isoflops"), "method": densify_method}
    fitter = isoflops.IsoflopsFitter(runs, F, **options)
    fits = method_named(fit_method).huber_minimum
    fitter.method = dataclasses.replace(method_named(densify_method), huber_minimum=fits)
    return fitter(runs.frame["loss_u"].to_numpy(float), F, None)


def differences(runs) -> list[dict]:
    """Every difference alone: its rows of V for 7B and 70B."""
    variants = {
        "approach 1: corrected (log coordinates, learnt widths, Huber minimum)": (
            "isoflops",
            isoflops_variant(runs, "corrected", "corrected"),
        ),
        "approach 1: + the authors' fits (L-BFGS-B, smallest relative MSE)": (
            "isoflops",
            isoflops_variant(runs, "corrected", "authors"),
        ),
        "approach 1: + the authors' densification (linear coordinates, paper widths)": (
            "isoflops",
            isoflops_variant(runs, "authors", "corrected"),
        ),
        "approach 1: the authors' (both)": (
            "isoflops",
            isoflops_variant(runs, "authors", "authors"),
        ),
        "approach 2: corrected (vertex at the smallest model's compute-optimal budget)": (
            "derivative",
            fit_approach("derivative", runs, F),
        ),
        "approach 2: vertex at the largest budget every run reaches": (
            "derivative",
            fit_approach("derivative", runs, F, LARGEST),
        ),
        "approach 2: argmin of the swept V at that budget": (
            "derivative",
            fit_approach("derivative", runs, F, {**LARGEST, "anchor_method": "argmin"}),
        ),
        "approach 2: the authors' (argmin at 2.7e17 by a quadratic spline in C, Nnv = 33M; "
        "gamma by fsolve at the paper's Nnv)": (
            "derivative",
            fit_approach("derivative", runs, F, {"method": "authors"}),
        ),
        "approach 3: corrected (true token counts)": (
            "parametric",
            fit_approach("parametric", runs, F),
        ),
        "approach 3: + H f(V/1000) in the fit (authors_tokenization)": (
            "parametric",
            fit_approach("parametric", runs, F, {"authors_tokenization": True}),
        ),
        "approach 3: the authors' (H f(V/1000), 486 L-BFGS-B starts, smallest relative MSE)": (
            "parametric",
            fit_approach("parametric", runs, F, {"method": "authors"}),
        ),
    }
    rows = []
    for name, (approach, fitted) in variants.items():
        row = {"variant": name}
        for target, nnv, d_model, budget in TARGETS:
            row[target] = vocab(fitted, approach, nnv, d_model, budget)
        rows.append(row)
    return rows


def both_methods(table: Path, samples: int, authors_samples: int, out: Path) -> pd.DataFrame:
    """`vocabscale estimate` under each method, as a user runs it; their predictions."""
    tables = []
    for method, count in (("corrected", samples), ("authors", authors_samples)):
        columns = [f"--column={theirs}={ours}" for theirs, ours in COLUMNS.items()]
        command = [
            sys.executable, "-m", "vocabscale", "estimate", "--runs", str(table),
            "--tokenization", "paper", *columns, "--method", method,
            "--bootstrap", str(count), "--out", str(out / method),
        ]  # fmt: skip
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        print(f"{method}: `{' '.join(command[2:])}` in {time.perf_counter() - started:.0f} s")
        predictions = pd.read_csv(out / method / "predictions.csv")
        tables.append(predictions[predictions["nnv"].isin([nnv for _, nnv, _, _ in TARGETS])])
    return pd.concat(tables, ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", help="where to write the paper-like table (default: a temp)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=200, help="refits, corrected method")
    parser.add_argument(
        "--authors-samples",
        type=int,
        default=50,
        help="refits, authors' method (each refits approach 1 from 420 L-BFGS-B starts)",
    )
    parser.add_argument(
        "--differences-only", action="store_true", help="skip the two `vocabscale estimate` runs"
    )
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    threadpool_limits(1)  # as `vocabscale estimate` does: tiny problems, BLAS threads contend
    print(f"machine: {cpu_model()}, {usable_cores()} cores available, load {os.getloadavg()}")
    out = Path(tempfile.mkdtemp(prefix="methods-"))
    table = Path(args.table) if args.table else out / "exp_data.csv"
    paper_like_table(args.seed).to_csv(table, index=False)
    runs = prepare_runs(pd.read_csv(table).rename(columns=COLUMNS), F, str(table))
    print(f"table: {table} ({len(runs.frame)} rows)\n")
    print("Each difference alone (approach 3 at the paper's budgets, 7.05e21 and 7.05e23):")
    print(pd.DataFrame(differences(runs)).to_string(index=False, float_format="{:,.0f}".format))
    if args.differences_only:
        return
    print("\nBoth methods, 90% intervals (approach 3 at each method's approach-1 budget):")
    predictions = both_methods(table, args.samples, args.authors_samples, out)
    columns = ["target", "approach", "method", "vocab_size", "vocab_size_low", "vocab_size_high"]
    columns += ["refits", "refits_excluded_share"]
    print(predictions[columns].to_string(index=False, float_format="{:,.3g}".format))
    print(f"\nload at the end {os.getloadavg()}; fits in {out}")


if __name__ == "__main__":
    main()
