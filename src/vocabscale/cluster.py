"""Cluster planning: what each training run costs and what it asks SLURM for.

`vocabscale plan` prints the grid with per-run FLOPs and estimated GPU-hours before anyone
submits dozens of jobs; the Snakemake train rule takes its SLURM resources (GPUs, CPUs, memory,
runtime, partition, account, QoS, GPU type) from `train_resources`, so the two always agree.

Partition, account, QoS and GPU type come from the environment (VOCABSCALE_SLURM_PARTITION,
VOCABSCALE_SLURM_ACCOUNT, VOCABSCALE_SLURM_QOS, VOCABSCALE_SLURM_GPU_TYPE) or, failing that,
from the `cluster` section of params.yaml, so nobody edits a tracked file to submit.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from vocabscale import accounting
from vocabscale.config import add_params_argument, load_params
from vocabscale.sweep import ModelSpec, model_specs, run_id
from vocabscale.tokens_per_char import PAPER_TOKENS_PER_CHAR

ENVIRONMENT = {
    "partition": "VOCABSCALE_SLURM_PARTITION",
    "account": "VOCABSCALE_SLURM_ACCOUNT",
    "qos": "VOCABSCALE_SLURM_QOS",
    "gpu_type": "VOCABSCALE_SLURM_GPU_TYPE",
}


#: Where a job goes: the `cluster` key and the SLURM executor's resource for it.
PLACEMENT = {"partition": "slurm_partition", "account": "slurm_account", "qos": "qos"}


def cluster_settings(params: dict[str, Any]) -> dict[str, Any]:
    """The `cluster` section with the environment's overrides applied."""
    settings = dict(params["cluster"])
    for key, variable in ENVIRONMENT.items():
        if os.environ.get(variable):
            settings[key] = os.environ[variable]
    return settings


@dataclass(frozen=True)
class RunCost:
    run: str
    model: str
    vocab_size: int
    gpus: int
    flops: float  # the paper's 6 (Nnv + V d) D
    flops_with_attention: float  # what the GPUs actually execute, evaluations included
    gpu_hours: float
    runtime_minutes: int  # one SLURM job's limit (capped; longer runs continue on retry)
    jobs: int  # SLURM jobs the run needs at that limit


def run_cost(spec: ModelSpec, vocab_size: int, params: dict[str, Any]) -> RunCost:
    """FLOPs of one run and the GPU time they take at the expected utilisation."""
    train, cluster = params["train"], cluster_settings(params)
    shape, tokens = spec.shape, spec.train_tokens
    paper_flops = accounting.flops(shape.non_vocab_params, vocab_size, shape.d_model, tokens)
    per_token = accounting.flops_per_token_with_attention(
        shape.non_vocab_params, vocab_size, shape.d_model, shape.n_layer, train["context"]
    )
    # evaluations: a forward pass (a third of a training step) over the evaluation text
    eval_tokens = (
        train["evals"]
        * params["corpus"]["validation_characters"]
        * float(PAPER_TOKENS_PER_CHAR(vocab_size))
    )
    executed = per_token * (tokens + eval_tokens / 3)
    seconds = executed / (spec.gpus * cluster["gpu_peak_flops"] * cluster["expected_mfu"])
    wall_minutes = seconds * cluster["runtime_safety"] / 60 + cluster["runtime_overhead_minutes"]
    limit = min(math.ceil(wall_minutes), cluster["max_runtime_minutes"])
    return RunCost(
        run=run_id(spec.name, vocab_size),
        model=spec.name,
        vocab_size=vocab_size,
        gpus=spec.gpus,
        flops=paper_flops,
        flops_with_attention=executed,
        gpu_hours=seconds * spec.gpus / 3600,
        runtime_minutes=limit,
        jobs=math.ceil(wall_minutes / limit),
    )


def plan(params: dict[str, Any]) -> pd.DataFrame:
    """Every run of the grid with its cost, in submission order."""
    rows = []
    for spec in model_specs(params).values():
        for vocab_size in params["tokenizer"]["vocab_sizes"]:
            rows.append(run_cost(spec, vocab_size, params).__dict__)
    return pd.DataFrame(rows)


def train_resources(params: dict[str, Any], model: str, vocab_size: int) -> dict[str, Any]:
    """SLURM resources of one training job, in the Snakemake SLURM executor's vocabulary.

    A CPU sweep (`train.device: cpu`) asks for no GPUs; otherwise `gpu` GPUs (of `gpu_model`
    when a type is set) in one task, torchrun starting one process per GPU inside it.
    """
    spec = model_specs(params)[model]
    cost = run_cost(spec, vocab_size, params)
    cluster = cluster_settings(params)
    uses_gpu = params["train"]["device"] != "cpu"
    devices = spec.gpus if uses_gpu else 1
    resources: dict[str, Any] = {
        "runtime": cost.runtime_minutes,
        "cpus_per_task": cluster["cpus_per_gpu"] * devices,
        "mem_mb": cluster["mem_mb_per_gpu"] * devices,
        "tasks": 1,
        # SIGTERM five minutes before the time limit: the run writes its checkpoint in time
        "slurm_extra": "--signal=TERM@300",
    }
    if uses_gpu:
        resources["gpu"] = spec.gpus
        if cluster.get("gpu_type"):
            resources["gpu_model"] = cluster["gpu_type"]
    resources.update(placement(cluster))
    return resources


def train_resource_callables(params: dict[str, Any]) -> dict[str, Callable]:
    """`train_resources` as one callable of the rule's wildcards per resource, the form a
    Snakemake `resources:` directive takes."""
    first_model = next(iter(params["models"]))
    names = train_resources(params, first_model, params["tokenizer"]["vocab_sizes"][0])

    def resource(name: str) -> Callable:
        return lambda wildcards: train_resources(params, wildcards.model, int(wildcards.vocab))[
            name
        ]

    return {name: resource(name) for name in names}


def train_retries(params: dict[str, Any]) -> int:
    """Retries of a training job: enough for the longest run to finish in time-limited pieces,
    plus two for preemption."""
    return int(plan(params)["jobs"].max()) + 2


def job_resources(params: dict[str, Any]) -> dict[str, Any]:
    """Partition, account and QoS for the CPU jobs (corpus preparation, tokenization)."""
    cluster = cluster_settings(params)
    return {"runtime": cluster["cpu_job_runtime_minutes"], **placement(cluster, cpu=True)}


def downstream_resources(params: dict[str, Any]) -> dict[str, Any]:
    """SLURM resources of one downstream evaluation job: a GPU unless it evaluates on the CPU
    (`downstream.device: cpu`), for `cluster.eval_job_runtime_minutes`."""
    cluster = cluster_settings(params)
    resources: dict[str, Any] = {
        "runtime": cluster["eval_job_runtime_minutes"],
        "cpus_per_task": cluster["cpus_per_gpu"],
        "mem_mb": cluster["mem_mb_per_gpu"],
    }
    if params["downstream"]["device"] != "cpu":
        resources["gpu"] = 1
        if cluster.get("gpu_type"):
            resources["gpu_model"] = cluster["gpu_type"]
    return {**resources, **placement(cluster)}


def placement(cluster: dict[str, Any], cpu: bool = False) -> dict[str, Any]:
    """Partition, account and QoS as SLURM resources, those that are set; for CPU jobs a
    `cpu_<key>` setting (cluster.cpu_partition) goes before the GPU jobs' one."""
    resources = {}
    for key, resource in PLACEMENT.items():
        value = (cpu and cluster.get(f"cpu_{key}")) or cluster.get(key)
        if value:
            resources[resource] = value
    return resources


def format_plan(table: pd.DataFrame, params: dict[str, Any]) -> str:
    """The plan as a fixed-width table with totals, for the terminal."""
    cluster = cluster_settings(params)
    lines = [
        f"{'run':<22} {'GPUs':>4} {'C = 6ND':>10} {'executed':>10} {'GPU-h':>9} "
        f"{'limit':>8} {'jobs':>4}"
    ]
    for row in table.itertuples():
        lines.append(
            f"{row.run:<22} {row.gpus:>4} {row.flops:>10.3g} {row.flops_with_attention:>10.3g} "
            f"{row.gpu_hours:>9.1f} {row.runtime_minutes:>6}m {row.jobs:>4}"
        )
    lines.append(
        f"{len(table)} runs, {table['flops'].sum():.3g} FLOPs (6ND), "
        f"{table['flops_with_attention'].sum():.3g} executed with attention and evaluations; "
        f"total {table['gpu_hours'].sum():,.1f} GPU-hours"
    )
    lines.append(
        f"assumes {cluster['gpu_peak_flops']:.3g} FLOP/s peak per GPU at "
        f"{cluster['expected_mfu']:.0%} utilisation (cluster.gpu_peak_flops, cluster.expected_mfu)"
        f"; partition {cluster.get('partition') or '(default)'}, account "
        f"{cluster.get('account') or '(default)'}"
    )
    return "\n".join(lines)


# --- vocabscale plan -------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_params_argument(parser)
    parser.add_argument("--csv", action="store_true", help="print the table as CSV")


def run(args: argparse.Namespace) -> None:
    params = load_params(args.params)
    table = plan(params)
    if args.csv:
        table.to_csv(sys.stdout, index=False)
    else:
        print(format_plan(table, params))
