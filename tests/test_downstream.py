"""Downstream evaluation as the paper did it: every run exported to Hugging Face and scored by
lm-evaluation-harness, here on a multiple-choice task defined over local files (no hub), its
numbers gathered into results/downstream.csv and carried into the report."""

from __future__ import annotations

import copy
import re
import shutil

import pandas as pd
import pytest
from conftest import next_text_task, offline_env, run_in, write_params

from vocabscale.config import ParamsError, read_yaml
from vocabscale.downstream.harness import task_manager
from vocabscale.io import read_json


@pytest.fixture(scope="module")
def tasks_dir(tmp_path_factory, corpus_dir):
    return next_text_task(tmp_path_factory.mktemp("tasks"), corpus_dir / "validation.parquet")


def downstream_params(params: dict, tasks_dir) -> dict:
    params = copy.deepcopy(params)
    params["downstream"] = {
        "tasks": ["next_text"],
        "limit": 24,
        "batch_size": 8,
        "device": "cpu",
        "include_path": str(tasks_dir),
    }
    return params


def test_one_run_is_exported_and_scored(trained_run, tasks_dir, tiny_params_dict, tmp_path):
    params = write_params(tmp_path / "params.yaml", downstream_params(tiny_params_dict, tasks_dir))
    out = tmp_path / "downstream/t-v640.json"
    tokenizer = trained_run.parents[1] / "tokenizers/v640/tokenizer.json"
    run_in(
        tmp_path,
        *("vocabscale", "downstream", "--params", str(params), "--run", str(trained_run)),
        *("--tokenizer", str(tokenizer), "--out", str(out)),
        env=offline_env(tmp_path / "hf"),
    )
    record = read_json(out)
    run = read_json(trained_run / "run.json")
    assert record["run_id"] == run["run_id"] and record["vocab_size"] == 640
    assert record["flops"] == 6 * (run["non_vocab_params"] + 640 * 32) * run["train_tokens"]
    scores = record["tasks"]["next_text"]
    assert scores["samples"] == 24 and scores["num_fewshot"] == 0
    for metric in ("acc", "acc_norm"):
        assert 0 <= scores[metric] <= 1
        assert 0 < scores[f"{metric}_stderr"] < 0.2
    # the exported model was scratch: only the record is left
    assert [p.name for p in out.parent.iterdir()] == ["t-v640.json"]


def test_an_unknown_task_is_named_before_anything_runs(tasks_dir):
    with pytest.raises(ParamsError, match=r"downstream\.tasks: no_such_task: not tasks of"):
        task_manager(["next_text", "no_such_task"], str(tasks_dir))
    with pytest.raises(ParamsError, match=r"downstream\.include_path: .* is not a directory"):
        task_manager(["next_text"], str(tasks_dir / "missing"))


@pytest.fixture(scope="module")
def pipeline_with_downstream(local_workflow_run, tasks_dir, tmp_path_factory):
    """The Snakemake run of the tiny params, continued with downstream evaluation turned on:
    only the downstream jobs, their table and the report run again."""
    project = tmp_path_factory.mktemp("downstream") / "project"
    shutil.copytree(local_workflow_run, project, symlinks=True)
    params = read_yaml(project / "params.yaml")
    write_params(project / "params.yaml", downstream_params(params, tasks_dir))
    env = offline_env(project.parent / "hf")
    result = run_in(project, "snakemake", "--cores", "2", env=env, timeout=1200)
    return project, result.stdout + result.stderr


@pytest.mark.slow
def test_the_stage_scores_every_run_and_the_report_shows_it(pipeline_with_downstream):
    project, output = pipeline_with_downstream
    runs = pd.read_csv(project / "results/runs.csv")
    ran = set(re.findall(r"rule (\w+):", output))
    assert ran == {"downstream", "collect_downstream", "report", "all"}  # nothing retrained

    table = pd.read_csv(project / "results/downstream.csv")
    assert set(table["run_id"]) == set(runs["run_id"]) and set(table["task"]) == {"next_text"}
    assert (table["samples"] == 24).all()
    assert table[["acc", "acc_norm"]].apply(lambda c: c.between(0, 1)).all().all()
    assert (table["acc_stderr"] > 0).all()
    final = runs.sort_values("step").groupby("run_id").tail(1).set_index("run_id")
    assert (table.set_index("run_id")["flops"] - final["flops"]).abs().max() < 1e-6 * final[
        "flops"
    ].max()

    report = (project / "results/report/report.md").read_text()
    assert (project / "results/report/figures/downstream.png").stat().st_size > 10_000
    assert "*Not drawn" not in report.split("Downstream: accuracy against V")[1][:200]
    for row in table.itertuples():
        cell = (
            f"{row.acc:.3f} ± {row.acc_stderr:.3f} | {row.acc_norm:.3f} ± {row.acc_norm_stderr:.3f}"
        )
        assert cell in report, cell
    assert "What each approach predicts for these models" in report


@pytest.mark.slow
def test_off_by_default_the_stages_only_say_so(local_workflow_run):
    table = pd.read_csv(local_workflow_run / "results/downstream.csv")
    assert table.empty and "acc_norm" in table.columns
    record = read_json(next((local_workflow_run / "results/downstream").glob("*.json")))
    assert record["tasks"] == {}
    report = (local_workflow_run / "results/report/report.md").read_text()
    assert "*Not drawn: downstream evaluation is off (downstream.tasks is empty).*" in report
