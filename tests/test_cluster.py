"""Planning a sweep for SLURM: costs, resources and the dry run of the paper-scale preset."""

from __future__ import annotations

import copy
import re
import subprocess
import sys

import pytest
from conftest import REPO, subprocess_env

from vocabscale.cluster import data_warning, plan, train_resources
from vocabscale.config import load_params
from vocabscale.io import write_json
from vocabscale.tokens_per_char import PAPER_TOKENS_PER_CHAR
from vocabscale.train.schedule import eval_points, trained_steps

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


def test_the_plan_counts_the_cooldown_branches_of_wsd(tmp_path):
    params = load_params(PAPER)
    assert params["train"]["schedule"] == "constant"  # the authors' trainer
    constant = plan(params, tmp_path).set_index("run")
    wsd_params = copy.deepcopy(params)
    wsd_params["train"]["schedule"] = "wsd"
    wsd = plan(wsd_params, tmp_path).set_index("run")
    steps = int(1.2e9) // 1_048_576
    assert steps == 1144  # 512 sequences of 2048 per step
    branches = trained_steps(eval_points(steps, 20, "wsd", 0.2))
    assert wsd.loc["33M-v4096", "trained_tokens"] == branches * 1_048_576
    assert constant.loc["33M-v4096", "trained_tokens"] == steps * 1_048_576
    assert branches / steps == pytest.approx(1 + 0.2 * 19 / 2.4, rel=0.01)  # 2.58x for 20
    # the executed FLOPs and the GPU time grow with them; C = 6ND, the points' own, does not
    assert (wsd["flops"] == constant["flops"]).all()
    ratio = wsd["gpu_hours"] / constant["gpu_hours"]
    assert ratio.between(2.5, 2.6).all()


def test_the_plan_names_the_runs_that_would_read_their_data_twice(tmp_path):
    params = load_params(PAPER)
    assert plan(params, tmp_path)["epochs"].max() < 1  # 8e11 characters cover every run
    assert data_warning(plan(params, tmp_path)) is None
    params["corpus"]["max_characters"] = 600_000_000_000  # the preset's former corpus
    table = plan(params, tmp_path).set_index("run")
    estimate = 6e11 * float(PAPER_TOKENS_PER_CHAR(96256))
    assert table.loc["2.87B-v96256", "epochs"] == pytest.approx(165.5e9 / estimate)
    warning = data_warning(table.reset_index())
    repeating = sorted(re.findall(r"^  (\S+):", warning, flags=re.M))
    assert repeating == sorted(f"2.87B-v{v}" for v in (16384, 24576, 32768, 48128, 64512, 96256))
    assert "2.87B-v96256: 1.655e+11 tokens, the corpus 1.392e+11 (estimated" in warning
    assert "1.19 epochs" in warning
    # once tokenized, the counted tokens replace the estimate
    write_json(tmp_path / "v96256" / "stats.json", {"splits": {"train": {"tokens": 2e11}}})
    counted = plan(params, tmp_path).set_index("run")
    assert counted.loc["2.87B-v96256", "epochs"] == pytest.approx(165.5e9 / 2e11)
    assert "2.87B-v96256" not in data_warning(counted.reset_index())


def test_snakemake_warns_about_runs_that_read_their_data_twice_before_any_job(tmp_path):
    params = PAPER.read_text().replace("max_characters: 800000000000", "max_characters: 6.0e+11")
    small = tmp_path / "small-corpus.yaml"
    small.write_text(params)
    result = subprocess.run(
        ["snakemake", "--configfile", str(small), "-n", "--cores", "1"],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "WARNING: 6 run(s) need more training tokens than the corpus holds" in result.stderr
    assert "2.87B-v96256: 1.655e+11 tokens" in result.stderr
