"""Cluster planning: what each job costs and what it asks SLURM for.

`vocabscale plan` prints every job of the grid with its geometry, FLOPs, GPU-hours (the wsd
cooldown branches and the evaluations included), time limit and the epochs each run reads
before anyone submits dozens of jobs; the Snakemake rules take their SLURM resources from
`train_resources` and `cpu_job_resources`, so the two always agree.

A training job on one node is one task holding all its GPUs, torchrun inside it starting one
process per GPU: `sbatch --nodes=1 --gpus=<type>:N --cpus-per-task=<cpus_per_gpu x N>`. (The
Snakemake SLURM executor turns a GPU job's `tasks` into `--ntasks-per-gpu`, one task per GPU
that SLURM may spread over nodes; the resource `tasks_per_gpu: 0` turns that off.) A run over
K nodes is one task per node, each with G GPUs (`--nodes=K --ntasks=K --ntasks-per-node=1
--gres=gpu:<type>:G`); the executor's `mpi` resource runs `vocabscale train` in the job's
first step, which starts torchrun on every node with srun (`vocabscale.train.distributed`).

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

from vocabscale import accounting, preemption
from vocabscale.config import ParamsError, add_params_argument, load_params
from vocabscale.corpus.sources import BUILTIN_PYTHON_DOCS, local_files
from vocabscale.io import read_json
from vocabscale.sweep import ModelSpec, model_specs, parallelism, run_id
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


def uses_gpus(params: dict[str, Any]) -> bool:
    """Whether training jobs ask for GPUs (all but a CPU sweep, `train.device: cpu`)."""
    return params["train"]["device"] != "cpu"


def time_limit(
    work_minutes: float, grace_seconds: int, cluster: dict[str, Any], job: str
) -> tuple[int, int]:
    """A job's time limit and the number of jobs its work takes: the work with
    `runtime_safety`, plus `runtime_overhead_minutes`, plus the grace window that SIGTERM comes
    before the limit, capped at `max_runtime_minutes` (work beyond continues in further jobs)."""
    reserved = cluster["runtime_overhead_minutes"] + math.ceil(grace_seconds / 60)
    if cluster["max_runtime_minutes"] <= reserved:
        raise ParamsError(
            f"{job}: cluster.max_runtime_minutes ({cluster['max_runtime_minutes']}) leaves no "
            f"time to work after cluster.runtime_overhead_minutes "
            f"({cluster['runtime_overhead_minutes']}) and the SIGTERM grace window "
            f"({grace_seconds} s)"
        )
    work = max(1, math.ceil(work_minutes * cluster["runtime_safety"]))
    limit = min(work + reserved, cluster["max_runtime_minutes"])
    return limit, math.ceil(work / (limit - reserved))


@dataclass(frozen=True)
class RunCost:
    """One training run: what it costs, and the geometry and time limit of its jobs."""

    run: str
    model: str
    vocab_size: int
    nodes: int
    gpus: int  # per node (CPU processes in a CPU sweep)
    parallel: str  # none (one process), ddp or fsdp
    memory_per_gpu: float  # bytes, the estimate of `accounting.training_memory`
    cpus_per_node: int
    mem_mb_per_node: int
    train_tokens: float  # D of the run (of its last evaluation point)
    flops: float  # the paper's 6 (Nnv + V d) D
    trained_tokens: int  # every optimizer step's tokens, wsd cooldown branches included
    flops_with_attention: float  # what the GPUs actually execute, evaluations included
    gpu_hours: float
    runtime_minutes: int  # one SLURM job's limit (capped; longer runs continue on retry)
    grace_seconds: int  # SIGTERM this long before the limit: the run checkpoints and exits
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
    """FLOPs of one run, the GPU time they take at the expected utilisation, its jobs and the
    epochs it reads."""
    train, cluster = params["train"], cluster_settings(params)
    shape, tokens, name = spec.shape, spec.train_tokens, run_id(spec.name, vocab_size)
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
    seconds = executed / (spec.processes * cluster["gpu_peak_flops"] * cluster["expected_mfu"])
    grace = preemption.grace_seconds(shape, vocab_size, cluster)
    chosen = parallelism(spec, vocab_size, params)
    limit, jobs = time_limit(seconds / 60, grace, cluster, f"run {name}")
    return RunCost(
        run=name,
        model=spec.name,
        vocab_size=vocab_size,
        nodes=spec.nodes,
        gpus=spec.gpus,
        parallel=chosen.kind,
        memory_per_gpu=chosen.memory_bytes,
        cpus_per_node=cluster["cpus_per_gpu"] * spec.gpus,
        mem_mb_per_node=cluster["mem_mb_per_gpu"] * spec.gpus,
        train_tokens=tokens,
        flops=paper_flops,
        trained_tokens=trained,
        flops_with_attention=executed,
        gpu_hours=seconds * spec.processes / 3600,
        runtime_minutes=limit,
        grace_seconds=grace,
        jobs=jobs,
        corpus_tokens=corpus,
        corpus_measured=measured,
        epochs=tokens / corpus,
    )


def plan(params: dict[str, Any], tokens_dir: str | Path = TOKENS_DIR) -> pd.DataFrame:
    """Every run of the grid with its cost and geometry, in submission order."""
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
    """SLURM resources of one training job, in the Snakemake SLURM executor's vocabulary: one
    task per node with `gpus` GPUs, `cpus_per_gpu` CPUs and `mem_mb_per_gpu` memory per GPU,
    SIGTERM a grace window before the time limit. A CPU sweep asks for no GPUs."""
    cost = run_cost(model_specs(params)[model], vocab_size, params)
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


def gpu_request(nodes: int, gpus: int, gpu_type: str | None) -> dict[str, Any]:
    """GPUs as executor resources: `gpu` (`--gpus`, per job) on one node, `gres` (per node)
    on several; `tasks_per_gpu: 0` so that the executor asks for no task per GPU."""
    if nodes == 1:
        request: dict[str, Any] = {"gpu": gpus, **({"gpu_model": gpu_type} if gpu_type else {})}
    else:
        request = {"gres": ":".join(["gpu", *([gpu_type] if gpu_type else []), str(gpus)])}
    return {**request, "tasks_per_gpu": 0}


def train_resource_callables(params: dict[str, Any]) -> dict[str, Callable]:
    """`train_resources` as one callable of the rule's wildcards per resource, the form a
    Snakemake `resources:` directive takes; a resource one run does not set is None for it
    (Snakemake leaves it out)."""
    names = {
        name: None
        for model in params["models"]
        for vocab_size in params["tokenizer"]["vocab_sizes"]
        for name in train_resources(params, model, vocab_size)
    }

    def resource(name: str) -> Callable:
        return lambda wildcards: train_resources(params, wildcards.model, int(wildcards.vocab)).get(
            name
        )

    return {name: resource(name) for name in names}


def train_retries(params: dict[str, Any]) -> int:
    """Retries of a training job: enough for the longest run to finish in time-limited pieces,
    plus two for preemption."""
    return int(plan(params)["jobs"].max()) + 2


# --- CPU jobs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CpuJob:
    """A corpus or tokenizer step that runs as a SLURM CPU job."""

    threads: int  # the rule's threads: the CPUs of its job
    throughput: str  # the `cluster` setting of the characters it reads per second
    per_cpu: bool  # whether that throughput is per CPU (the job scales with its CPUs)


CPU_JOBS = {
    "prepare_corpus": CpuJob(4, "prepare_chars_per_s", per_cpu=False),
    "train_tokenizer": CpuJob(8, "tokenizer_train_chars_per_s", per_cpu=False),
    "tokenize": CpuJob(8, "tokenize_chars_per_cpu_s", per_cpu=True),
    "tokenize_part": CpuJob(8, "tokenize_chars_per_cpu_s", per_cpu=True),
}


def source_characters(params: dict[str, Any]) -> float | None:
    """Characters prepare-corpus will read: `corpus.max_characters`, else the size of local
    source files (compressed and parquet ones at `cluster.source_chars_per_byte`); None for a
    source of unknown size (a hub dataset, the builtin corpus, files not on this host)."""
    corpus = params["corpus"]
    if corpus["max_characters"]:
        return float(corpus["max_characters"])
    source = corpus["source"]
    if isinstance(source, str) and (source == BUILTIN_PYTHON_DOCS or source.startswith("hub:")):
        return None
    try:
        files = local_files([source] if isinstance(source, str) else source)
    except (FileNotFoundError, ValueError):
        return None
    per_byte = params["cluster"]["source_chars_per_byte"]
    return float(
        sum(
            os.path.getsize(path) * (1 if path.endswith((".txt", ".jsonl", ".json")) else per_byte)
            for path in files
        )
    )


def cpu_job_characters(
    params: dict[str, Any], step: str, corpus_dir: Path | None = None
) -> float | None:
    """Characters a CPU job reads: tokenizer training its sample; tokenization the prepared
    corpus (exactly, from its stats.json, once it exists), a part job its share of the
    training text, the gather the validation text and, as a bound on copying the parts'
    arrays, a share too; corpus preparation the source."""
    if step == "train_tokenizer":
        return float(params["corpus"]["tokenizer_sample_characters"])
    stats = corpus_dir / "stats.json" if corpus_dir else None
    if step == "prepare_corpus":
        return source_characters(params)
    if stats and stats.is_file():
        splits = read_json(stats)["splits"]
        train, validation = splits["train"]["characters"], splits["validation"]["characters"]
    elif (source := source_characters(params)) is not None:
        train, validation = source, 0
    else:
        return None
    share = train / params["tokenizer"]["tokenize_jobs"]
    return float(share if step == "tokenize_part" else share + validation)


def cpu_job_resources(
    params: dict[str, Any], step: str, corpus_dir: Path | None = None
) -> dict[str, Any]:
    """CPUs, time limit and memory of a CPU job. Time from the characters it reads at the
    measured throughput (a source of unknown size gets `max_runtime_minutes`), memory from
    what it holds; `cluster.cpu_job_runtime_minutes` and `cluster.cpu_job_mem_mb` override
    them. The CPUs are explicit, the rule's threads, so that the limit is made for the CPUs
    the job gets whatever `--cores` or `--max-threads` say."""
    cluster, job = cluster_settings(params), CPU_JOBS[step]
    characters = cpu_job_characters(params, step, corpus_dir)
    runtime = cluster["cpu_job_runtime_minutes"]
    if runtime is None and characters is None:
        runtime = cluster["max_runtime_minutes"]
    elif runtime is None:
        rate = cluster[job.throughput] * (job.threads if job.per_cpu else 1)
        runtime, _ = time_limit(characters / rate / 60, 0, cluster, step)
    memory = cluster["cpu_job_mem_mb"]
    if memory is None:
        memory = cluster["cpu_job_base_mem_mb"]
        if step == "train_tokenizer":
            sample = params["corpus"]["tokenizer_sample_characters"]
            memory += math.ceil(sample * cluster["tokenizer_train_bytes_per_char"] / 1e6)
    return {
        "cpus_per_task": job.threads,
        "runtime": runtime,
        "mem_mb": memory,
        **placement(cluster, cpu=True),
    }


def cpu_job_resource_callables(params: dict[str, Any], step: str) -> dict[str, Any]:
    """`cpu_job_resources` for a rule's `resources:`. Snakemake evaluates them again when the
    job is ready to run, when its input (the prepared corpus) exists and says its size."""

    def resource(name: str) -> Callable:
        def value(wildcards, input):
            corpus = next((Path(f) for f in input if (Path(f) / "stats.json").is_file()), None)
            return cpu_job_resources(params, step, corpus)[name]

        return value

    return {name: resource(name) for name in cpu_job_resources(params, step)}


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


def placement(cluster: dict[str, Any], cpu: bool = False) -> dict[str, Any]:
    """Partition, account and QoS as SLURM resources, those that are set; for CPU jobs a
    `cpu_<key>` setting (cluster.cpu_partition) goes before the GPU jobs' one."""
    resources = {}
    for key, resource in PLACEMENT.items():
        value = (cpu and cluster.get(f"cpu_{key}")) or cluster.get(key)
        if value:
            resources[resource] = value
    return resources


# --- vocabscale plan -------------------------------------------------------------------------


def format_plan(table: pd.DataFrame, params: dict[str, Any]) -> str:
    """The plan as a fixed-width table with totals, for the terminal: every training job's
    geometry (nodes x GPUs per node, CPUs and memory per node), how it spreads over its GPUs
    and the memory that takes of each, limit and grace window, then the CPU jobs."""
    cluster = cluster_settings(params)
    device = (cluster.get("gpu_type") or "GPU") if uses_gpus(params) else "CPU proc."
    lines = [
        f"{'run':<22} {'nodes x GPUs':>16} {'CPUs':>5} {'mem':>8} {'parallel':>8} "
        f"{'mem/GPU':>8} {'limit':>7} {'TERM@':>6} "
        f"{'jobs':>4} {'GPU-h':>9} {'tokens':>9} {'C = 6ND':>10} {'executed':>10} {'epochs':>6}"
    ]
    for row in table.itertuples():
        geometry = f"{row.nodes} x {row.gpus} {device}"
        lines.append(
            f"{row.run:<22} {geometry:>16} {row.cpus_per_node:>5} "
            f"{row.mem_mb_per_node / 1000:>5.0f} GB {row.parallel:>8} "
            f"{row.memory_per_gpu / 1e9:>5.1f} GB {row.runtime_minutes:>6}m "
            f"{row.grace_seconds:>5}s {row.jobs:>4} {row.gpu_hours:>9.1f} "
            f"{row.train_tokens:>9.3g} {row.flops:>10.3g} {row.flops_with_attention:>10.3g} "
            f"{row.epochs:>6.2f}"
        )
    lines.append(
        f"{len(table)} runs, {table['flops'].sum():.3g} FLOPs (6ND), "
        f"{table['flops_with_attention'].sum():.3g} executed with attention and evaluations; "
        f"total {table['gpu_hours'].sum():,.1f} GPU-hours"
    )
    lines.append(schedule_note(table, params["train"]))
    lines.append(
        "each job: one task per node (torchrun starts one process per GPU), CPUs and memory per "
        "node, SIGTERM `TERM@` seconds before the limit to checkpoint; mem/GPU: the estimate "
        "of training state and activations per GPU (per process on CPU), under DDP or sharded "
        f"by FSDP (a GPU has {cluster['gpu_memory_gb']:g} GB, cluster.gpu_memory_gb); assumes "
        f"{cluster['gpu_peak_flops']:.3g} FLOP/s peak per GPU at {cluster['expected_mfu']:.0%} "
        f"utilisation; partition {cluster.get('partition') or '(default)'}, account "
        f"{cluster.get('account') or '(default)'}"
    )
    lines.append(data_warning(table) or corpus_note(table))
    return "\n".join([*lines, "", *format_cpu_jobs(params)])


def format_cpu_jobs(params: dict[str, Any]) -> list[str]:
    """The CPU jobs' lines of the plan: CPUs, memory, limit and the characters each reads
    (with tokenizer.tokenize_jobs > 1, the part jobs and the gather)."""
    vocab_sizes = len(params["tokenizer"]["vocab_sizes"])
    parts = params["tokenizer"]["tokenize_jobs"]
    counts = {"prepare_corpus": 1, "tokenize_part": vocab_sizes * parts if parts > 1 else 0}
    names = {"tokenize": "tokenize (gather)"} if parts > 1 else {}
    lines = [f"{'CPU job':<22} {'count':>5} {'CPUs':>5} {'mem':>8} {'limit':>7} {'characters':>11}"]
    for step, job in CPU_JOBS.items():
        count = counts.get(step, vocab_sizes)
        if not count:
            continue
        resources = cpu_job_resources(params, step)
        characters = cpu_job_characters(params, step)
        read = "unknown" if characters is None else f"{characters:.3g}"
        memory = resources["mem_mb"] / 1000
        lines.append(
            f"{names.get(step, step):<22} {count:>5} {job.threads:>5} {memory:>5.1f} GB "
            f"{resources['runtime']:>6}m {read:>11}"
        )
    return lines


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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_params_argument(parser)
    parser.add_argument("--csv", action="store_true", help="print the training jobs as CSV")
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
