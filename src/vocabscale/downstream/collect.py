"""Stage collect-downstream: the downstream scores of every run of the grid in one table,
results/downstream.csv, one row per run and task (none when evaluation is off)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd

from vocabscale.config import add_params_argument, load_params
from vocabscale.downstream import RUN_COLUMNS
from vocabscale.io import read_json, write_csv
from vocabscale.sweep import run_grid

log = logging.getLogger(__name__)

DOWNSTREAM_COLUMNS = [
    *RUN_COLUMNS,
    "task",
    "num_fewshot",
    "samples",
    "acc",
    "acc_stderr",
    "acc_norm",
    "acc_norm_stderr",
]


def collect_downstream(
    run_ids: list[str], results_dir: str | Path, out: str | Path
) -> pd.DataFrame:
    """Rows of the per-run records of exactly `run_ids` (files of runs no longer in the grid
    are ignored). Metrics a task does not have (acc_norm of some) are left empty."""
    rows = []
    for run_id in run_ids:
        record = read_json(Path(results_dir) / f"{run_id}.json")
        run = {key: record[key] for key in RUN_COLUMNS}
        rows += [{**run, "task": task, **values} for task, values in record["tasks"].items()]
    table = pd.DataFrame(rows).reindex(columns=DOWNSTREAM_COLUMNS)
    table = table.sort_values(["task", "non_vocab_params", "vocab_size"], kind="stable")
    write_csv(out, table)
    log.info(
        "downstream table: %d runs x %d tasks -> %s", len(run_ids), table["task"].nunique(), out
    )
    return table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_params_argument(parser)
    parser.add_argument("--results-dir", required=True, help="holds <model>-v<V>.json")
    parser.add_argument("--out", required=True, help="the table (CSV) to write")


def run(args: argparse.Namespace) -> None:
    collect_downstream(run_grid(load_params(args.params)), args.results_dir, args.out)
