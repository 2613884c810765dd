"""Planning a sweep for SLURM: costs, resources and the dry run of the paper-scale preset."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import REPO, subprocess_env

from vocabscale.cluster import plan, train_resources
from vocabscale.config import load_params

PAPER = REPO / "workflow/presets/paper.yaml"


def test_plan_of_the_paper_grid_adds_up():
    params = load_params(PAPER)
    table = plan(params)
    assert len(table) == 7 * 10
    row = table[table["run"] == "33M-v4096"].iloc[0]
    # C = 6 (Nnv + V d) D with the exact 33M count
    assert row["flops"] == pytest.approx(6 * (33_563_136 + 4096 * 512) * 1.2e9)
    # GPU-hours: executed FLOPs / (peak x utilisation), times the run's GPUs
    peak = params["cluster"]["gpu_peak_flops"] * params["cluster"]["expected_mfu"]
    assert row["gpu_hours"] == pytest.approx(row["flops_with_attention"] / peak / 3600)
    assert (table["runtime_minutes"] <= params["cluster"]["max_runtime_minutes"]).all()
    # a run longer than one job's limit is split over several jobs
    longest = table.loc[table["gpu_hours"].idxmax()]
    assert longest["jobs"] > 1


def test_plan_command_prints_the_total(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "vocabscale", "plan", "--params", str(PAPER)],
        capture_output=True,
        text=True,
        check=True,
    )
    total = float(re.search(r"total ([\d,.]+) GPU-hours", result.stdout).group(1).replace(",", ""))
    assert total == pytest.approx(plan(load_params(PAPER))["gpu_hours"].sum(), rel=1e-3)


def test_resources_follow_params_and_environment(monkeypatch):
    params = load_params(PAPER)
    monkeypatch.setenv("VOCABSCALE_SLURM_PARTITION", "gpu-long")
    monkeypatch.setenv("VOCABSCALE_SLURM_GPU_TYPE", "h100")
    resources = train_resources(params, "2.87B", 32768)
    assert resources["gpu"] == 8 and resources["gpu_model"] == "h100"
    assert resources["slurm_partition"] == "gpu-long"
    assert resources["cpus_per_task"] == 8 * params["cluster"]["cpus_per_gpu"]
    params["train"]["device"] = "cpu"  # a CPU sweep asks for no GPU
    assert "gpu" not in train_resources(params, "33M", 4096)


def test_dry_run_of_the_paper_preset_lists_every_job_with_resources():
    env = {**subprocess_env(), "VOCABSCALE_SLURM_PARTITION": "gpu"}
    result = subprocess.run(
        ["snakemake", "--profile", "cluster", "--configfile", str(PAPER), "-n"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout + result.stderr
    train_jobs = re.findall(r"rule train:.*?resources: ([^\n]+)", out, flags=re.S)
    assert len(train_jobs) == 70
    for resources in train_jobs:
        assert re.search(r"\bgpu=\d", resources) and "slurm_partition=gpu" in resources
        assert re.search(r"runtime=\d+", resources)
