"""Downstream evaluation as the paper did it: every run exported to Hugging Face and scored by
lm-evaluation-harness, here on a multiple-choice task defined over local files (no hub), its
numbers gathered into results/downstream.csv and carried into the report. The stage holds its
output's lock, leaves no scratch model behind a kill, and reruns under both engines when a task
file or the harness changes."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from conftest import (
    git_commit_all,
    lock_holder,
    next_text_task,
    offline_env,
    run_in,
    wait_for,
    write_params,
)

from vocabscale.config import ParamsError, read_yaml
from vocabscale.downstream import tasks as tasks_module
from vocabscale.downstream.harness import task_manager
from vocabscale.downstream.tasks import check_fingerprint, task_fingerprint
from vocabscale.io import read_json, write_json


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


def downstream_command(tmp_path: Path, trained_run: Path, tasks_dir, params: dict) -> list[str]:
    """`vocabscale downstream` of the trained run into tmp_path/downstream/t-v640.json, its
    task fingerprint written first (the downstream_tasks stage)."""
    params_file = write_params(tmp_path / "params.yaml", downstream_params(params, tasks_dir))
    fingerprint = tmp_path / "downstream_tasks.json"
    run_in(tmp_path, "vocabscale", "downstream-tasks", "--params", str(params_file),
           "--out", str(fingerprint))  # fmt: skip
    tokenizer = trained_run.parents[1] / "tokenizers/v640/tokenizer.json"
    return [
        *("vocabscale", "downstream", "--params", str(params_file), "--run", str(trained_run)),
        *("--tokenizer", str(tokenizer), "--tasks", str(fingerprint)),
        *("--out", str(tmp_path / "downstream/t-v640.json")),
    ]


def test_one_run_is_exported_and_scored(trained_run, tasks_dir, tiny_params_dict, tmp_path):
    command = downstream_command(tmp_path, trained_run, tasks_dir, tiny_params_dict)
    out = tmp_path / "downstream/t-v640.json"
    run_in(tmp_path, *command, env=offline_env(tmp_path / "hf"))
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
    assert record["task_fingerprint"] == read_json(tmp_path / "downstream_tasks.json")


def test_the_stage_holds_its_lock_and_clears_what_a_killed_one_left(
    trained_run, tasks_dir, tiny_params_dict, tmp_path
):
    """A second writer of the record meets the lock and touches nothing; a kill leaves the
    scratch model (a full fp32 copy), which the next run removes under the lock."""
    command = downstream_command(tmp_path, trained_run, tasks_dir, tiny_params_dict)
    out, env = tmp_path / "downstream/t-v640.json", offline_env(tmp_path / "hf")
    first = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        scratch = wait_for(
            lambda: next(out.parent.glob(".t-v640.json.*.tmp/hf/model.safetensors"), None),
            "the scratch model",
        ).parents[1]
        holder = wait_for(lambda: lock_holder(out), "the lock of the record")
        os.kill(first.pid, signal.SIGSTOP)
        assert holder["pid"] == first.pid
        second = run_in(tmp_path, *command, env={**env, "VOCABSCALE_LOCK_WAIT": "0"}, check=False)
        assert second.returncode == 2, second.stderr[-3000:]
        assert f"{out} is being written by another process (pid {first.pid}" in second.stderr
    finally:
        first.kill()
        first.communicate()
    assert scratch.is_dir() and not out.exists()
    again = run_in(tmp_path, *command, env=env)
    assert f"removing {scratch}, left by a writer that was killed" in again.stderr
    assert [p.name for p in out.parent.iterdir()] == ["t-v640.json"]
    assert read_json(out)["tasks"]["next_text"]["samples"] == 24


def test_the_task_fingerprint_follows_the_task_files_and_the_harness(
    tasks_dir, tmp_path, monkeypatch
):
    tasks = tmp_path / "tasks"
    shutil.copytree(tasks_dir, tasks)
    settings = {"tasks": ["next_text"], "include_path": str(tasks)}
    fingerprint = task_fingerprint(settings)
    assert set(fingerprint["task_files"]) == {"next_text.yaml", "train.jsonl", "validation.jsonl"}
    assert fingerprint["lm_eval"] == tasks_module.lm_eval_version() is not None
    with open(tasks / "next_text.yaml", "a") as stream:
        stream.write("# an edit\n")
    edited = task_fingerprint(settings)
    assert edited != fingerprint
    monkeypatch.setattr(tasks_module, "lm_eval_version", lambda: "0.0.1")
    assert task_fingerprint(settings) not in (fingerprint, edited)
    off = {"tasks": [], "include_path": str(tasks)}
    assert task_fingerprint(off) == {"evaluation": "off"}  # nothing evaluated, nothing changes
    write_json(tmp_path / "recorded.json", edited)
    with pytest.raises(ParamsError, match="does not match the task files"):
        check_fingerprint(tmp_path / "recorded.json", settings)


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
    # nothing retrained
    assert ran == {"downstream_tasks", "downstream", "collect_downstream", "report", "all"}

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


def stages_of(text: str) -> set[str]:
    """The rules `snakemake --dry-run` would run."""
    return set(re.findall(r"^(?:local)?rule (\w+):", text, re.MULTILINE)) - {"all"}


@pytest.mark.slow
def test_an_edited_task_file_reruns_the_downstream_stages(
    pipeline_with_downstream, tasks_dir, tmp_path
):
    """The issue's case: editing a task left both engines saying nothing to do. Snakemake
    reads the fingerprint when it reads the workflow; DVC, which cannot follow a directory a
    setting names, sees it once the fingerprint stage has run again."""
    project = tmp_path / "project"
    shutil.copytree(pipeline_with_downstream[0], project, symlinks=True)
    git_commit_all(project)
    run_in(project, "vocabscale", "dvc-commit", env=offline_env(project.parent / "hf"))
    task = Path(tasks_dir) / "next_text.yaml"
    kept = task.read_bytes()
    try:
        task.write_bytes(kept + b"# an edit\n")
        planned = stages_of(run_in(project, "snakemake", "--dry-run").stdout)
        assert planned == {"downstream_tasks", "downstream", "collect_downstream", "report"}
        assert json.loads(run_in(project, "dvc", "status", "--json").stdout or "{}") == {}
        run_in(project, "dvc", "repro", "--force", "--single-item", "downstream_tasks")
        changed = set(json.loads(run_in(project, "dvc", "status", "--json").stdout))
    finally:
        task.write_bytes(kept)
    runs = pd.read_csv(project / "results/runs.csv")["run_id"].unique()
    models_vocabs = {f"downstream@{run.replace('-v', '-')}" for run in runs}
    assert changed == models_vocabs
