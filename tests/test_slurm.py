"""`snakemake --profile cluster` against a real one-node SLURM.

Skipped where SLURM is not installed; `.ci/run` installs it and sets VOCABSCALE_REQUIRE_SLURM=1,
which turns the skip into a failure so CI always runs these tests.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

import pandas as pd
import pytest
import slurm_cluster
import yaml
from conftest import copy_repo, git_commit_all, run_in, subprocess_env, write_params
from test_distributed import assert_evaluates_like

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


# --- GPU jobs on the fake GPUs ---------------------------------------------------------------

#: The runs of the GPU sweep: (GPUs per node, nodes).
GPU_RUNS = {"g1": (1, 1), "g2": (2, 1), "g4": (4, 1), "n2": (2, 2)}
CPUS_PER_GPU = 2


@pytest.fixture(scope="module")
def gpu_sweep(slurm_run, cluster):
    """A GPU sweep (`train.device: auto`, GPU type h100) submitted with `snakemake --profile
    cluster` to the fake GPUs: 1, 2 and 4 GPUs on one node, and 2 GPUs on each of 2 nodes.
    torch sees no GPU there, so every run trains on the CPU of its allocation: real jobs to
    the end, with the geometry of GPU jobs. The corpus and tokens of the CPU run are reused
    (`--rerun-triggers mtime`): only the training jobs are new."""
    workdir, env, _ = slurm_run
    settings = yaml.safe_load((workdir / "params.yaml").read_text())
    shape = {"n_layer": 1, "n_head": 2, "d_model": 32, "ffn": 64}
    steps = 8
    settings["models"] = {
        name: {**shape, "train_tokens": steps * settings["train"]["batch_tokens"], "gpus": g}
        | {"nodes": n}
        for name, (g, n) in GPU_RUNS.items()
    }
    settings["train"]["device"] = "auto"
    settings["cluster"].update(
        gpu_type=slurm_cluster.GPU_TYPE,
        gpus_per_node=slurm_cluster.GPUS_PER_NODE,
        cpus_per_gpu=CPUS_PER_GPU,
        mem_mb_per_gpu=500,
    )
    write_params(workdir / "gpu.yaml", settings)
    targets = [f"results/runs/{name}-v320" for name in GPU_RUNS]
    result = snakemake(
        workdir, env, "--configfile", "gpu.yaml", "--rerun-triggers", "mtime", "--verbose", *targets
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-6000:]
    jobs = {}
    for name in GPU_RUNS:
        run = f"{name}-v320"
        comment = f"rule_train_wildcards_{name}_320"  # the executor's label of the job
        shown = [job for job in cluster.show_jobs() if job.get("Comment") == comment]
        assert len(shown) == 1, f"{run}: {len(shown)} SLURM jobs"
        (sbatch,) = re.findall(rf"sbatch call: (sbatch .*? --comment {comment} .*?) --wrap", out)
        jobs[name] = {
            "scontrol": shown[0],
            "sbatch": sbatch,
            "log": workdir / f"logs/train/{run}.log",
        }
        print(f"{run}: {sbatch}\n  {geometry(shown[0])}")
    return workdir, jobs


def geometry(job: dict[str, str]) -> str:
    keys = ("NumNodes", "NumTasks", "NumCPUs", "CPUs/Task", "TresPerJob", "TresPerNode")
    return " ".join(f"{key}={job[key]}" for key in keys if key in job)


@pytest.mark.parametrize("name", ["g1", "g2", "g4"])
def test_a_gpu_job_is_one_node_one_task_with_its_gpus(gpu_sweep, cluster, name):
    _, jobs = gpu_sweep
    gpus, _ = GPU_RUNS[name]
    job, sbatch = jobs[name]["scontrol"], jobs[name]["sbatch"]
    assert job["JobState"] == "COMPLETED"
    assert (job["NumNodes"], job["NumTasks"]) == ("1", "1")
    assert job["NumCPUs"] == job["CPUs/Task"] == str(CPUS_PER_GPU * gpus)
    assert job["TresPerJob"] == f"gres:gpu:{slurm_cluster.GPU_TYPE}:{gpus}"
    assert "--ntasks-per-gpu" not in sbatch and "--nodes=1" in sbatch
    assert f"--gpus={slurm_cluster.GPU_TYPE}:{gpus}" in sbatch
    log = jobs[name]["log"].read_text()
    if cluster.gpu_devices:  # the run saw its GPUs (and, torch seeing none, trained on CPU)
        visible = re.search(r"CUDA_VISIBLE_DEVICES=([\d,]+)", log).group(1)
        assert len(visible.split(",")) == gpus, log[-2000:]


def test_a_run_over_two_nodes_is_one_task_per_node(gpu_sweep):
    workdir, jobs = gpu_sweep
    gpus, nodes = GPU_RUNS["n2"]
    job, sbatch = jobs["n2"]["scontrol"], jobs["n2"]["sbatch"]
    assert job["JobState"] == "COMPLETED"
    assert (job["NumNodes"], job["NumTasks"]) == (str(nodes), str(nodes))
    assert job["CPUs/Task"] == str(CPUS_PER_GPU * gpus)
    assert job["NumCPUs"] == str(CPUS_PER_GPU * gpus * nodes)
    assert job["TresPerNode"] == f"gres:gpu:{slurm_cluster.GPU_TYPE}:{gpus}"
    assert "--ntasks-per-node=1" in sbatch and f"--nodes={nodes}" in sbatch
    # srun started torchrun on both nodes; their workers formed one run of 4 processes
    log = jobs["n2"]["log"].read_text()
    assert "srun --nodes=2 --ntasks=2 --ntasks-per-node=1" in log
    assert "--rdzv-backend=c10d" in log
    assert set(re.findall(r"SLURM job \d+ on (n\d)", log)) == set(slurm_cluster.NODES)
    run = json.loads((workdir / "results/runs/n2-v320/run.json").read_text())
    assert run["processes"] == gpus * nodes


def test_every_geometry_trains_the_same_run(gpu_sweep):
    """One process, 2 and 4 on one node, 4 over two nodes: the same evaluations."""
    workdir, _ = gpu_sweep
    for name in GPU_RUNS:
        assert_evaluates_like(
            workdir / f"results/runs/{name}-v320", workdir / "results/runs/g1-v320"
        )
