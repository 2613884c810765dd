"""What each job asks SLURM for, in the Snakemake SLURM executor's vocabulary, made from the
costs (`cost`, `cpu_jobs`) and from where jobs go.

Where jobs go (partition, account, QoS, GPU type) comes from the environment
(VOCABSCALE_SLURM_*) before the `cluster` section of params.yaml, so nobody edits a tracked
file to submit. The geometry these resources give, and why, is in docs/design.md (On a
cluster); tests/test_slurm.py reads it back from a real SLURM.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vocabscale.cluster.cost import RunCost
from vocabscale.cluster.cpu_jobs import CPU_JOBS, cpu_job_size
from vocabscale.config import check_slurm_name

ENVIRONMENT = {
    "partition": "VOCABSCALE_SLURM_PARTITION",
    "account": "VOCABSCALE_SLURM_ACCOUNT",
    "qos": "VOCABSCALE_SLURM_QOS",
    "gpu_type": "VOCABSCALE_SLURM_GPU_TYPE",
}

#: Where a job goes: the `cluster` key and the SLURM executor's resource for it.
PLACEMENT = {"partition": "slurm_partition", "account": "slurm_account", "qos": "qos"}


def cluster_settings(params: dict[str, Any]) -> dict[str, Any]:
    """The `cluster` section with the environment's overrides applied, each checked as the
    schema checks the key it overrides (a ParamsError naming the variable)."""
    settings = dict(params["cluster"])
    for key, variable in ENVIRONMENT.items():
        if value := os.environ.get(variable):
            check_slurm_name(key, value, variable)
            settings[key] = value
    return settings


def uses_gpus(params: dict[str, Any]) -> bool:
    """Whether training jobs ask for GPUs (all but a CPU sweep, `train.device: cpu`)."""
    return params["train"]["device"] != "cpu"


def placement(cluster: dict[str, Any], cpu: bool = False) -> dict[str, Any]:
    """Partition, account and QoS as SLURM resources, those that are set; for CPU jobs a
    `cpu_<key>` setting (cluster.cpu_partition) goes before the GPU jobs' one."""
    resources = {}
    for key, resource in PLACEMENT.items():
        value = (cpu and cluster.get(f"cpu_{key}")) or cluster.get(key)
        if value:
            resources[resource] = value
    return resources


def gpu_request(nodes: int, gpus: int, gpu_type: str | None) -> dict[str, Any]:
    """GPUs as executor resources: `gpu` (`--gpus`, per job) on one node, `gres` (per node)
    on several; `tasks_per_gpu: 0` so that the executor asks for no task per GPU."""
    if nodes == 1:
        request: dict[str, Any] = {"gpu": gpus, **({"gpu_model": gpu_type} if gpu_type else {})}
    else:
        request = {"gres": ":".join(["gpu", *([gpu_type] if gpu_type else []), str(gpus)])}
    return {**request, "tasks_per_gpu": 0}


def train_resources(cost: RunCost, params: dict[str, Any]) -> dict[str, Any]:
    """SLURM resources of one training job: one task per node with `gpus` GPUs, `cpus_per_gpu`
    CPUs and `mem_mb_per_gpu` memory per GPU, SIGTERM a grace window before the time limit. A
    CPU sweep asks for no GPUs."""
    cluster = cluster_settings(params)
    signal = f"--signal=TERM@{cost.grace_seconds}"
    resources: dict[str, Any] = {
        "nodes": cost.nodes,
        "tasks": cost.nodes,
        "cpus_per_task": cost.cpus_per_node,
        "mem_mb": cost.mem_mb_per_node,
        "runtime": cost.runtime_minutes,
        "slurm_extra": signal,
        **placement(cluster),
    }
    if uses_gpus(params):
        resources.update(gpu_request(cost.nodes, cost.gpus, cluster.get("gpu_type")))
    if cost.nodes > 1:
        # the rule runs in the job's batch step and starts one srun task per node itself
        resources["mpi"] = "srun"
        resources["slurm_extra"] = f"--ntasks-per-node=1 {signal}"
    return resources


def cpu_job_resources(
    params: dict[str, Any], step: str, corpus_dir: Path | None = None
) -> dict[str, Any]:
    """CPUs, time limit and memory of a CPU job (`cpu_jobs.cpu_job_size`). The CPUs are
    explicit, the rule's threads, so that the limit is made for the CPUs the job gets whatever
    `--cores` or `--max-threads` say."""
    size = cpu_job_size(params, step, corpus_dir)
    return {
        "cpus_per_task": CPU_JOBS[step].threads,
        "runtime": size.runtime_minutes,
        "mem_mb": size.mem_mb,
        **placement(cluster_settings(params), cpu=True),
    }


def downstream_resources(params: dict[str, Any]) -> dict[str, Any]:
    """SLURM resources of one downstream evaluation job: a GPU unless it evaluates on the CPU
    (`downstream.device: cpu`), for `cluster.eval_job_runtime_minutes`."""
    cluster = cluster_settings(params)
    resources: dict[str, Any] = {
        "nodes": 1,
        "tasks": 1,
        "runtime": cluster["eval_job_runtime_minutes"],
        "cpus_per_task": cluster["cpus_per_gpu"],
        "mem_mb": cluster["mem_mb_per_gpu"],
    }
    if params["downstream"]["device"] != "cpu":
        resources.update(gpu_request(1, 1, cluster.get("gpu_type")))
    return {**resources, **placement(cluster)}
