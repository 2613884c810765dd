"""Cluster planning: what each training run costs and what it asks SLURM for.

`vocabscale plan` prints the grid with per-run FLOPs, estimated GPU-hours (the wsd cooldown
branches and the evaluations included) and the epochs each run reads before anyone submits
dozens of jobs; the Snakemake train rule takes its SLURM resources (GPUs, CPUs, memory,
runtime, partition, account, QoS, GPU type) from `train_resources`, so the two always agree.

Whether a run needs more tokens than the corpus holds cannot be known when params.yaml is
validated (the corpus is not tokenized yet), so `data_warning` checks it with the best numbers
there are: the token counts of `results/tokens/v<V>/stats.json` once tokenized, else an estimate
from `corpus.max_characters` and the paper's f(V). The Snakefile prints it before any job runs,
`vocabscale plan` prints it, and every training run checks its own, measured, at its start.

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
from pathlib import Path
from typing import Any

import pandas as pd

from vocabscale import accounting
from vocabscale.config import add_params_argument, load_params
from vocabscale.io import read_json
from vocabscale.sweep import ModelSpec, model_specs, run_id
from vocabscale.tokens_per_char import PAPER_TOKENS_PER_CHAR
from vocabscale.train.schedule import eval_points, trained_steps

#: Where `vocabscale plan` and the Snakefile look for the token counts of a tokenized corpus.
TOKENS_DIR = "results/tokens"

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
    train_tokens: float  # D of the run (of its last evaluation point)
    flops: float  # the paper's 6 (Nnv + V d) D
    trained_tokens: int  # every optimizer step's tokens, wsd cooldown branches included
    flops_with_attention: float  # what the GPUs actually execute, evaluations included
    gpu_hours: float
    runtime_minutes: int  # one SLURM job's limit (capped; longer runs continue on retry)
    jobs: int  # SLURM jobs the run needs at that limit
    corpus_tokens: float  # training tokens of the corpus at this V (nan: unknown)
    corpus_measured: bool  # counted by the tokenize stage, or estimated
    epochs: float  # passes over the corpus the run makes (nan: unknown)


def corpus_tokens(params: dict[str, Any], vocab_size: int, tokens_dir: str | Path) -> tuple:
    """(training tokens of the corpus at V, whether counted): the tokenize stage's count when
    it has run, else corpus.max_characters x the paper's f(V) (an estimate), else nan."""
    stats = Path(tokens_dir) / f"v{vocab_size}" / "stats.json"
    if stats.exists():
        return read_json(stats)["splits"]["train"]["tokens"], True
    characters = params["corpus"]["max_characters"]
    if characters is None:
        return math.nan, False
    return characters * float(PAPER_TOKENS_PER_CHAR(vocab_size)), False


def run_cost(
    spec: ModelSpec, vocab_size: int, params: dict[str, Any], tokens_dir: str | Path = TOKENS_DIR
) -> RunCost:
    """FLOPs of one run, the GPU time they take at the expected utilisation, and the epochs
    it reads."""
    train, cluster = params["train"], cluster_settings(params)
    shape, tokens = spec.shape, spec.train_tokens
    steps = int(tokens // train["batch_tokens"])
    points = eval_points(steps, train["evals"], train["schedule"], train["cooldown_fraction"])
    trained = trained_steps(points) * train["batch_tokens"]
    corpus, measured = corpus_tokens(params, vocab_size, tokens_dir)
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
    executed = per_token * (trained + eval_tokens / 3)
    seconds = executed / (spec.gpus * cluster["gpu_peak_flops"] * cluster["expected_mfu"])
    wall_minutes = seconds * cluster["runtime_safety"] / 60 + cluster["runtime_overhead_minutes"]
    limit = min(math.ceil(wall_minutes), cluster["max_runtime_minutes"])
    return RunCost(
        run=run_id(spec.name, vocab_size),
        model=spec.name,
        vocab_size=vocab_size,
        gpus=spec.gpus,
        train_tokens=tokens,
        flops=paper_flops,
        trained_tokens=trained,
        flops_with_attention=executed,
        gpu_hours=seconds * spec.gpus / 3600,
        runtime_minutes=limit,
        jobs=math.ceil(wall_minutes / limit),
        corpus_tokens=corpus,
        corpus_measured=measured,
        epochs=tokens / corpus,
    )


def plan(params: dict[str, Any], tokens_dir: str | Path = TOKENS_DIR) -> pd.DataFrame:
    """Every run of the grid with its cost, in submission order."""
    rows = []
    for spec in model_specs(params).values():
        for vocab_size in params["tokenizer"]["vocab_sizes"]:
            rows.append(run_cost(spec, vocab_size, params, tokens_dir).__dict__)
    return pd.DataFrame(rows)


def data_warning(table: pd.DataFrame) -> str | None:
    """What to say when runs of the plan need more tokens than the corpus holds (they read
    some of it twice), naming them and the numbers; None when none does."""
    repeating = table[table["epochs"] > 1]
    if repeating.empty:
        return None
    lines = [
        f"{len(repeating)} run(s) need more training tokens than the corpus holds and read "
        "some of it twice (raise corpus.max_characters or lower models.<name>.train_tokens):"
    ]
    for row in repeating.itertuples():
        source = "counted" if row.corpus_measured else "estimated from corpus.max_characters"
        lines.append(
            f"  {row.run}: {row.train_tokens:.4g} tokens, the corpus {row.corpus_tokens:.4g} "
            f"({source}): {row.epochs:.2f} epochs"
        )
    return "\n".join(lines)


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
        f"{'run':<22} {'GPUs':>4} {'tokens':>9} {'C = 6ND':>10} {'executed':>10} {'GPU-h':>9} "
        f"{'limit':>8} {'jobs':>4} {'epochs':>6}"
    ]
    for row in table.itertuples():
        lines.append(
            f"{row.run:<22} {row.gpus:>4} {row.train_tokens:>9.3g} {row.flops:>10.3g} "
            f"{row.flops_with_attention:>10.3g} {row.gpu_hours:>9.1f} {row.runtime_minutes:>6}m "
            f"{row.jobs:>4} {row.epochs:>6.2f}"
        )
    lines.append(
        f"{len(table)} runs, {table['flops'].sum():.3g} FLOPs (6ND), "
        f"{table['flops_with_attention'].sum():.3g} executed with attention and evaluations; "
        f"total {table['gpu_hours'].sum():,.1f} GPU-hours"
    )
    lines.append(schedule_note(table, params["train"]))
    lines.append(
        f"assumes {cluster['gpu_peak_flops']:.3g} FLOP/s peak per GPU at "
        f"{cluster['expected_mfu']:.0%} utilisation (cluster.gpu_peak_flops, cluster.expected_mfu)"
        f"; partition {cluster.get('partition') or '(default)'}, account "
        f"{cluster.get('account') or '(default)'}"
    )
    lines.append(data_warning(table) or corpus_note(table))
    return "\n".join(lines)


def schedule_note(table: pd.DataFrame, train: dict[str, Any]) -> str:
    """What the schedule adds to the training compute."""
    if train["schedule"] != "wsd":
        return f"schedule {train['schedule']}: every evaluation point is the main trajectory"
    extra = table["trained_tokens"].sum() / table["train_tokens"].sum() - 1
    return (
        f"schedule wsd: the cooldown branches of the {train['evals']} evaluation points "
        f"(train.cooldown_fraction {train['cooldown_fraction']:g}) add {extra:.0%} to the "
        "tokens trained; executed FLOPs and GPU-hours include them"
    )


def corpus_note(table: pd.DataFrame) -> str:
    """Where the epochs come from, when no run repeats data."""
    if table["epochs"].isna().all():
        return (
            "epochs: unknown until the corpus is tokenized (corpus.max_characters is not set); "
            "every training run checks its own when it starts"
        )
    measured = table["corpus_measured"]
    source = "counted" if measured.all() else "partly estimated" if measured.any() else "estimated"
    return f"epochs: every run reads its data once (corpus sizes {source})"


# --- vocabscale plan -------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_params_argument(parser)
    parser.add_argument("--csv", action="store_true", help="print the table as CSV")
    parser.add_argument(
        "--tokens-dir", default=TOKENS_DIR, help="the tokenize stage's outputs, v<V>/stats.json"
    )


def run(args: argparse.Namespace) -> None:
    params = load_params(args.params)
    table = plan(params, args.tokens_dir)
    if args.csv:
        table.to_csv(sys.stdout, index=False)
    else:
        print(format_plan(table, params))
