"""Command `vocabscale collect`: every run of the grid in the runs table (`grid_table`), the
estimators' only input."""

from __future__ import annotations

import argparse
import logging

from vocabscale.config import add_params_argument, load_params
from vocabscale.io import output_lock, write_csv
from vocabscale.runs.grid_table import collect_runs
from vocabscale.sweep import run_grid

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_params_argument(parser)
    parser.add_argument("--runs-dir", required=True, help="holds <model>-v<V>/run.json")
    parser.add_argument("--normalized-dir", required=True, help="holds <model>-v<V>.csv")
    parser.add_argument("--out", required=True, help="the runs table (CSV) to write")


def run(args: argparse.Namespace) -> None:
    run_ids = run_grid(load_params(args.params))
    with output_lock(args.out):
        runs = collect_runs(run_ids, args.runs_dir, args.normalized_dir)
        write_csv(args.out, runs)
    log.info(
        "runs table: %d runs, %d checkpoints, %d diverged -> %s",
        len(run_ids),
        len(runs),
        runs.groupby("run_id")["diverged"].first().sum(),
        args.out,
    )
