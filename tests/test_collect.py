"""The runs table keeps every run of the grid: one that diverged before its first evaluation
is a row marked diverged, counted as a diverged run by the estimators and by the report, never
a run that silently went missing."""

from __future__ import annotations

import copy
import re

import pandas as pd
import pytest

from vocabscale.config import validate_params
from vocabscale.estimate.results import Estimates
from vocabscale.io import write_csv, write_json
from vocabscale.records import RecordError
from vocabscale.report.doubts import diverged_runs
from vocabscale.report.evidence import Evidence
from vocabscale.runs.grid_table import collect_runs
from vocabscale.runs.normalized_loss import normalize_run
from vocabscale.runs.table import diverged_rows, load_runs
from vocabscale.sweep import model_specs
from vocabscale.tokens_per_char import PAPER_TOKENS_PER_CHAR
from vocabscale.train.config import TrainConfig
from vocabscale.train.loop import train_run


def test_a_run_that_diverges_before_its_first_evaluation_stays_in_the_table(
    tokenized, tmp_path, tiny_params_dict
):
    params = validate_params(copy.deepcopy(tiny_params_dict))
    config = TrainConfig.from_params(params["train"])
    specs = model_specs(params)
    runs, normalized = tmp_path / "runs", tmp_path / "normalized"
    for model, nan_at in (("a", 2), ("b", None)):
        run_id = f"{model}-v320"
        trained = train_run(
            specs[model], tokenized[320], config, runs / run_id, tmp_path / "ckpt" / run_id, nan_at
        )
        write_csv(normalized / f"{run_id}.csv", normalize_run(runs / run_id, tokenized[320], 1.0))
    assert trained["diverged"] is False
    assert pd.read_csv(normalized / "a-v320.csv").empty  # diverged at step 2, before any eval

    table = collect_runs(["a-v320", "b-v320"], runs, normalized)
    write_csv(tmp_path / "runs.csv", table)
    early = table[table["run_id"] == "a-v320"]
    assert len(early) == 1 and bool(early["diverged"].iloc[0]) and early["step"].iloc[0] == 2
    assert early["loss_u"].isna().all()
    assert (table["run_id"] == "b-v320").sum() == params["train"]["evals"]

    loaded = load_runs(tmp_path / "runs.csv", PAPER_TOKENS_PER_CHAR)
    assert loaded.excluded["diverged"] == 1 and list(loaded.run_ids) == ["b-v320"]
    evidence = Evidence(
        estimates=Estimates({}),
        settings=params["report"],
        targets=[],
        predictions=pd.DataFrame(),
        diverged=diverged_rows(pd.read_csv(tmp_path / "runs.csv")),
    )
    assert list(diverged_runs(evidence)) == [("1 run (1 row of the runs table): a-v320.", None)]


def test_a_run_json_without_a_field_is_an_error_naming_the_file_and_the_key(tmp_path):
    """It was a bare KeyError, printed as the key's name alone."""
    run_json = tmp_path / "runs" / "r" / "run.json"
    write_json(run_json, {"run_id": "r", "model": "m", "vocab_size": 320, "diverged": False})
    write_csv(tmp_path / "normalized" / "r.csv", pd.DataFrame({"step": [1]}))
    with pytest.raises(RecordError, match=rf"^{re.escape(str(run_json))}: no 'd_model'"):
        collect_runs(["r"], tmp_path / "runs", tmp_path / "normalized")
