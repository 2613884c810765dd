"""The downstream scores of every run of the grid in one table, one row per run and task
(none when evaluation is off)."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from vocabscale.downstream import RUN_COLUMNS
from vocabscale.io import read_json, write_csv

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
