"""What one training run costs: its FLOPs, memory per GPU, GPU time, and the time-limited SLURM
jobs that time takes.

Pure: a run's spec, params and the corpus size in, numbers out; nothing read from disk or the
environment (where jobs go is `slurm`'s, how large the corpus is `plan`'s), so the workflow can
compute every run's cost once and `vocabscale plan` prints the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from vocabscale import accounting, preemption
from vocabscale.config import ParamsError
from vocabscale.sweep import ModelSpec, parallelism, run_id
from vocabscale.tokens_per_char import PAPER_TOKENS_PER_CHAR
from vocabscale.train.schedule import eval_points, trained_steps


def time_limit(
    work_minutes: float, grace_seconds: int, cluster: dict[str, Any], job: str
) -> tuple[int, int]:
    """A job's time limit and the number of jobs its work takes: the work with
    `runtime_safety`, plus `runtime_overhead_minutes`, plus the grace window that SIGTERM comes
    before the limit, capped at `max_runtime_minutes` (work beyond continues in further jobs)."""
    reserved = _reserved_minutes(grace_seconds, cluster)
    if cluster["max_runtime_minutes"] <= reserved:
        raise ParamsError(
            f"{job}: cluster.max_runtime_minutes ({cluster['max_runtime_minutes']}) leaves no "
            f"time to work after cluster.runtime_overhead_minutes "
            f"({cluster['runtime_overhead_minutes']}) and the SIGTERM grace window "
            f"({grace_seconds} s)"
        )
    work = _safe_work_minutes(work_minutes, cluster)
    limit = min(work + reserved, cluster["max_runtime_minutes"])
    return limit, math.ceil(work / (limit - reserved))


def needed_minutes(work_minutes: float, grace_seconds: int, cluster: dict[str, Any]) -> int:
    """The limit one job would need to do all the work: `time_limit`'s before the cap."""
    return _safe_work_minutes(work_minutes, cluster) + _reserved_minutes(grace_seconds, cluster)


def _safe_work_minutes(work_minutes: float, cluster: dict[str, Any]) -> int:
    return max(1, math.ceil(work_minutes * cluster["runtime_safety"]))


def _reserved_minutes(grace_seconds: int, cluster: dict[str, Any]) -> int:
    return cluster["runtime_overhead_minutes"] + math.ceil(grace_seconds / 60)


@dataclass(frozen=True)
class CorpusSize:
    """The corpus's training tokens at one V (nan: unknown), and whether they were counted by
    the tokenize stage or estimated."""

    tokens: float
    measured: bool


@dataclass(frozen=True)
class RunCost:
    """One training run: what it costs, and the geometry and time limit of its jobs (the
    columns of `vocabscale plan --csv`, in this order)."""

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


def executed_flops(spec: ModelSpec, vocab_size: int, params: dict[str, Any]) -> tuple[int, float]:
    """(tokens trained, FLOPs executed): every optimizer step, the wsd cooldown branches
    included, with attention, plus the evaluations (a forward pass, a third of a training
    step, over the evaluation text at each point)."""
    train, shape = params["train"], spec.shape
    steps = int(spec.train_tokens // train["batch_tokens"])
    points = eval_points(steps, train["evals"], train["schedule"], train["cooldown_fraction"])
    trained = trained_steps(points) * train["batch_tokens"]
    per_token = accounting.flops_per_token_with_attention(
        shape.non_vocab_params, vocab_size, shape.d_model, shape.n_layer, train["context"]
    )
    eval_tokens = (
        train["evals"]
        * params["corpus"]["validation_characters"]
        * float(PAPER_TOKENS_PER_CHAR(vocab_size))
    )
    return trained, per_token * (trained + eval_tokens / 3)


def run_cost(
    spec: ModelSpec, vocab_size: int, params: dict[str, Any], corpus: CorpusSize
) -> RunCost:
    """FLOPs of one run, the GPU time they take at the expected utilisation, its jobs and the
    epochs it reads of a corpus of `corpus` tokens."""
    cluster, shape, tokens = params["cluster"], spec.shape, spec.train_tokens
    name = run_id(spec.name, vocab_size)
    trained, executed = executed_flops(spec, vocab_size, params)
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
        flops=accounting.flops(shape.non_vocab_params, vocab_size, shape.d_model, tokens),
        trained_tokens=trained,
        flops_with_attention=executed,
        gpu_hours=seconds * spec.processes / 3600,
        runtime_minutes=limit,
        grace_seconds=grace,
        jobs=jobs,
        corpus_tokens=corpus.tokens,
        corpus_measured=corpus.measured,
        epochs=tokens / corpus.tokens,
    )
