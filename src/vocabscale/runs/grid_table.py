"""The runs table, one row per evaluation checkpoint of one run of the grid: each run's run.json
joined with its normalized evaluations. A run that diverged before its first evaluation has
one row, marked diverged and without numbers, so that it counts as diverged, not missing."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from vocabscale.io import read_json
from vocabscale.records import field

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
    run_ids: list[str], runs_dir: str | Path, normalized_dir: str | Path
) -> pd.DataFrame:
    """Join each run's run.json with its normalized evaluations, for exactly `run_ids` (the
    grid of params.yaml; files of runs no longer in the grid are ignored)."""
    frames = []
    for run_id in run_ids:
        record = Path(runs_dir) / run_id / "run.json"
        run = read_json(record)
        normalized = Path(normalized_dir) / f"{run_id}.csv"
        evals = pd.read_csv(normalized)
        if evals.empty:
            if not field(run, record, "diverged"):
                raise ValueError(f"{normalized}: no evaluation, yet run {run_id} did not diverge")
            step = field(run, record, "diverged_at_step")
            evals = pd.DataFrame([{"step": step}], columns=evals.columns)
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
            evals[key] = field(run, record, key)
        frames.append(evals)
    runs = pd.concat(frames, ignore_index=True)
    return runs[RUNS_COLUMNS + EXTRA_COLUMNS].sort_values(
        ["non_vocab_params", "vocab_size", "step"]
    )
