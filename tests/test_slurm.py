"""`snakemake --profile cluster` against a real one-node SLURM.

Skipped where SLURM is not installed; `.ci/run` installs it and sets VOCABSCALE_REQUIRE_SLURM=1,
which turns the skip into a failure so CI always runs these tests.
"""

from __future__ import annotations

import os
import re
import subprocess
import time

import pandas as pd
import pytest
import slurm_cluster
import yaml
from conftest import copy_repo, git_commit_all, run_in, subprocess_env, write_params

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

# fmt: off
SNAKEMAKE_OVERRIDES = [
    "--slurm-status-command", "squeue",  # the test cluster keeps no accounting database
    "--slurm-no-account",
    "--slurm-init-seconds-before-status-checks", "2",
    "--seconds-between-status-checks", "2",
    "--max-threads", "2",  # the node has two cores
    "--default-resources", "runtime=30", "mem_mb=1000",
    "--jobs", "4",
]
# fmt: on


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = slurm_cluster.missing_reason()
    if reason:
        if os.environ.get(slurm_cluster.REQUIRE_VARIABLE) == "1":
            pytest.fail(f"{slurm_cluster.REQUIRE_VARIABLE}=1 but {reason}")
        pytest.skip(reason)
    running = slurm_cluster.start(tmp_path_factory.mktemp("slurm"))
    yield running
    slurm_cluster.stop(running)


def snakemake(workdir, env, *extra, timeout=900):
    return run_in(
        workdir,
        "snakemake",
        "--profile",
        "cluster",
        *SNAKEMAKE_OVERRIDES,
        *extra,
        check=False,
        env=env,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory, tiny_params_dict):
    workdir = copy_repo(tmp_path_factory.mktemp("on-slurm"))
    write_params(workdir / "params.yaml", tiny_params_dict)  # a CPU node: see conftest
    env = {**subprocess_env(), **cluster.env}
    result = snakemake(workdir, env)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return workdir, env, result


def test_training_jobs_ran_as_slurm_jobs(slurm_run):
    workdir, _, result = slurm_run
    submitted = re.findall(
        r"rule train.*?submitted with SLURM jobid (\d+)", result.stdout + result.stderr, flags=re.S
    )
    train_logs = sorted((workdir / "logs/train").glob("*.log"))
    assert len(train_logs) == 6
    for log in train_logs:
        match = re.search(r"SLURM job (\d+)", log.read_text())
        assert match, f"{log.name} does not come from a SLURM job"
    # the executor's own per-job logs land under one folder
    assert list((workdir / "logs/slurm").rglob("*.log"))
    assert submitted or "SLURM jobid" in result.stdout + result.stderr


def test_results_equal_a_local_run(slurm_run, local_workflow_run):
    on_slurm = pd.read_csv(slurm_run[0] / "results/runs.csv")
    local = pd.read_csv(local_workflow_run / "results/runs.csv")
    pd.testing.assert_frame_equal(on_slurm, local)
    assert (slurm_run[0] / "results/report/report.md").exists()


def test_dvc_takes_the_slurm_run_over(slurm_run):
    """The hand-over after a SLURM run: `vocabscale dvc-commit` records it, then DVC has
    nothing to run. (Before the test below, which adds a run to params.yaml.)"""
    workdir, env, _ = slurm_run
    git_commit_all(workdir)
    run_in(workdir, "vocabscale", "dvc-commit", env=env)
    run_in(workdir, "dvc", "status", "--quiet", env=env)


def test_a_cancelled_run_resumes_from_its_checkpoint(slurm_run, cluster):
    """scancel a training job mid-run while its workflow's head process dies too (the worst
    case: nothing is left to retry it); running the workflow again resumes the run from its
    checkpoint instead of step 0, and completes it."""
    workdir, env, _ = slurm_run
    settings = yaml.safe_load((workdir / "params.yaml").read_text())
    # a longer run of the same tiny shape, checkpointed every few steps
    settings["models"]["long"] = {
        "n_layer": 2,
        "n_head": 2,
        "d_model": 48,
        "ffn": 96,
        "train_tokens": 600 * settings["train"]["batch_tokens"],
    }
    settings["train"]["checkpoint_every"] = 20
    write_params(workdir / "params.yaml", settings)
    target = "results/runs/long-v320"
    state = workdir / "results/checkpoints/long-v320/state.pt"
    head = subprocess.Popen(
        ["snakemake", "--profile", "cluster", *SNAKEMAKE_OVERRIDES, target],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        job = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and head.poll() is None:
            running = [j for j in cluster.jobs() if j["state"] == "RUNNING"]
            if state.exists() and running:
                job = running[0]["id"]
                break
            time.sleep(0.5)
        assert job, "the training job never ran long enough to checkpoint"
    finally:
        head.kill()
        head.wait()
    cluster.run("scancel", job)
    deadline = time.monotonic() + 120
    while any(j["id"] == job for j in cluster.jobs()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not (workdir / target).exists()
    assert state.exists(), "the checkpoint must survive the cancelled job"

    unlock = snakemake(workdir, env, "--unlock")
    assert unlock.returncode == 0, unlock.stderr[-2000:]
    again = snakemake(workdir, env, target)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    log = (workdir / "logs/train/long-v320.log").read_text()
    resumed = re.findall(r"resuming \S+ from step (\d+)", log)
    assert resumed and int(resumed[-1]) > 0, log[-3000:]
    assert re.search(r"SLURM job \d+", log)
    evals = pd.read_csv(workdir / target / "evals.csv")
    assert len(evals) == settings["train"]["evals"]
    assert evals["step"].iloc[-1] == 600
