"""Stage collect: the runs table, one row per evaluation checkpoint of one run.

This table is the estimators' only input, so a table made by another training stack with the
same columns works just as well (`vocabscale.runs.table` reads and checks one). A run that
diverged before its first evaluation has one row, marked diverged and without numbers, so
that it is counted as diverged rather than missing from the sweep.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd

from vocabscale.config import add_params_argument, load_params
from vocabscale.io import output_lock, read_json, write_csv
from vocabscale.sweep import run_grid

log = logging.getLogger(__name__)

RUNS_COLUMNS = [
    "run_id",
    "model",
    "vocab_size",
    "d_model",
    "non_vocab_params",
    "vocab_params",
    "step",
    "tokens",
    "characters",
    "flops",
    "loss",
    "loss_u",
    "bpc",
    "bpb",
    "diverged",
]
EXTRA_COLUMNS = [
    "flops_with_attention",
    "n_layer",
    "context",
    "schedule",
    "cooldown_tokens",
    "epochs",
]


def collect_runs(
    run_ids: list[str], runs_dir: str | Path, normalized_dir: str | Path, out: str | Path
) -> pd.DataFrame:
    """Join each run's run.json with its normalized evaluations, for exactly `run_ids` (the
    grid of params.yaml; files of runs no longer in the grid are ignored)."""
    frames = []
    for run_id in run_ids:
        run = read_json(Path(runs_dir) / run_id / "run.json")
        normalized = Path(normalized_dir) / f"{run_id}.csv"
        evals = pd.read_csv(normalized)
        if evals.empty:
            if not run["diverged"]:
                raise ValueError(f"{normalized}: no evaluation, yet run {run_id} did not diverge")
            evals = pd.DataFrame([{"step": run["diverged_at_step"]}], columns=evals.columns)
        for key in (
            "run_id",
            "model",
            "vocab_size",
            "d_model",
            "non_vocab_params",
            "vocab_params",
            "diverged",
            "n_layer",
            "context",
        ):
            evals[key] = run[key]
        frames.append(evals)
    runs = pd.concat(frames, ignore_index=True)
    runs = runs[RUNS_COLUMNS + EXTRA_COLUMNS].sort_values(
        ["non_vocab_params", "vocab_size", "step"]
    )
    write_csv(out, runs)
    log.info(
        "runs table: %d runs, %d checkpoints, %d diverged -> %s",
        len(run_ids),
        len(runs),
        runs.groupby("run_id")["diverged"].first().sum(),
        out,
    )
    return runs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_params_argument(parser)
    parser.add_argument("--runs-dir", required=True, help="holds <model>-v<V>/run.json")
    parser.add_argument("--normalized-dir", required=True, help="holds <model>-v<V>.csv")
    parser.add_argument("--out", required=True, help="the runs table (CSV) to write")


def run(args: argparse.Namespace) -> None:
    run_ids = run_grid(load_params(args.params))
    with output_lock(args.out):
        collect_runs(run_ids, args.runs_dir, args.normalized_dir, args.out)
