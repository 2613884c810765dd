"""The plan: every training run of the grid with its cost, computed once, as a table and as
the text `vocabscale plan` prints (then the CPU jobs).

The corpus size it reads the epochs against is the best there is when it is made: the token
counts of `results/tokens/v<V>/stats.json` once tokenized, else an estimate from
`corpus.max_characters` and the paper's f(V) (docs/design.md, Is the corpus large enough?).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from vocabscale.cluster.cost import CorpusSize, RunCost, run_cost
from vocabscale.cluster.cpu_jobs import CPU_JOBS, cpu_job_rate, cpu_job_size
from vocabscale.cluster.slurm import cluster_settings, uses_gpus
from vocabscale.io import read_json
from vocabscale.records import field
from vocabscale.sweep import ModelSpec, model_specs
from vocabscale.tokens_per_char import PAPER_TOKENS_PER_CHAR

#: Where `vocabscale plan` and the Snakefile look for the token counts of a tokenized corpus.
TOKENS_DIR = "results/tokens"


def corpus_size(params: dict[str, Any], vocab_size: int, tokens_dir: str | Path) -> CorpusSize:
    """The corpus's training tokens at V: the tokenize stage's count when it has run, else
    corpus.max_characters x the paper's f(V) (an estimate), else nan."""
    stats = Path(tokens_dir) / f"v{vocab_size}" / "stats.json"
    if stats.exists():
        return CorpusSize(field(read_json(stats), stats, "splits", "train", "tokens"), True)
    characters = params["corpus"]["max_characters"]
    if characters is None:
        return CorpusSize(math.nan, False)
    return CorpusSize(characters * float(PAPER_TOKENS_PER_CHAR(vocab_size)), False)


def planned_run(
    spec: ModelSpec, vocab_size: int, params: dict[str, Any], tokens_dir: str | Path
) -> RunCost:
    """One run's cost, its epochs read against the corpus as far as it is known now."""
    return run_cost(spec, vocab_size, params, corpus_size(params, vocab_size, tokens_dir))


@dataclass(frozen=True)
class Plan:
    """Every run of the grid with its cost, by run id in submission order."""

    runs: dict[str, RunCost]

    @cached_property
    def table(self) -> pd.DataFrame:
        """One row per run, the fields of RunCost as columns."""
        return pd.DataFrame([cost.__dict__ for cost in self.runs.values()])


def plan(params: dict[str, Any], tokens_dir: str | Path = TOKENS_DIR) -> Plan:
    """The cost of every run of the grid, each model with each V."""
    costs = (
        planned_run(spec, vocab_size, params, tokens_dir)
        for spec in model_specs(params).values()
        for vocab_size in params["tokenizer"]["vocab_sizes"]
    )
    return Plan({cost.run: cost for cost in costs})


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
    lines.append(assumptions_note(cluster))
    lines.append(data_warning(table) or corpus_note(table))
    cpu_jobs = format_cpu_jobs(params)
    if too_long := cpu_job_warning(params):
        cpu_jobs.append(f"WARNING: {too_long}")
    return "\n".join([*lines, "", *cpu_jobs])


def assumptions_note(cluster: dict[str, Any]) -> str:
    """What the columns mean and what the numbers assume, under the training jobs."""
    return (
        "each job: one task per node (torchrun starts one process per GPU), CPUs and memory per "
        "node, SIGTERM `TERM@` seconds before the limit to checkpoint; mem/GPU: the estimate "
        "of training state and activations per GPU (per process on CPU), under DDP or sharded "
        f"by FSDP (a GPU has {cluster['gpu_memory_gb']:g} GB, cluster.gpu_memory_gb); assumes "
        f"{cluster['gpu_peak_flops']:.3g} FLOP/s peak per GPU at {cluster['expected_mfu']:.0%} "
        f"utilisation; partition {cluster.get('partition') or '(default)'}, account "
        f"{cluster.get('account') or '(default)'}"
    )


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
        size = cpu_job_size(params, step)
        read = "unknown" if size.characters is None else f"{size.characters:.3g}"
        memory = size.mem_mb / 1000
        lines.append(
            f"{names.get(step, step):<22} {count:>5} {job.threads:>5} {memory:>5.1f} GB "
            f"{size.runtime_minutes:>6}m {read:>11}"
        )
    return lines


#: What to do about a CPU job that cannot resume and is longer than its time limit.
SHORTER = {
    "prepare_corpus": "lower corpus.max_characters, or set cluster.prepare_chars_per_s to the "
    "throughput you measure (benchmarks/RESULTS.md)",
    "train_tokenizer": "lower corpus.tokenizer_sample_characters (the sample every tokenizer "
    "trains on), or set cluster.tokenizer_train_chars_per_s to the throughput you measure "
    "(benchmarks/RESULTS.md)",
}


def cpu_job_warning(params: dict[str, Any]) -> str | None:
    """What to say when a CPU job that cannot resume (prepare-corpus, train-tokenizer) is
    estimated to take longer than its time limit: SLURM stops it at the limit and every retry
    starts over, so it never finishes. A warning, not an error: the estimate rests on
    throughputs measured elsewhere (`cluster.*_chars_per_s`), which a cluster may beat."""
    cluster, lines = params["cluster"], []
    for step, job in CPU_JOBS.items():
        size = cpu_job_size(params, step)
        if job.resumes or size.needed_minutes is None:
            continue
        if size.needed_minutes <= size.runtime_minutes:
            continue
        setting = "cpu_job_runtime_minutes" if cluster["cpu_job_runtime_minutes"] else None
        limit = setting or "max_runtime_minutes"
        lines.append(
            f"  {step}: about {size.needed_minutes:,} minutes ({size.characters:.3g} characters "
            f"at cluster.{job.throughput} {cpu_job_rate(params, step):.3g}/s, times "
            f"cluster.runtime_safety, plus cluster.runtime_overhead_minutes), over its limit of "
            f"{size.runtime_minutes:,} (cluster.{limit}): set cluster.cpu_job_runtime_minutes to "
            f"{size.needed_minutes} or more if the CPU partition allows jobs that long, or "
            f"{SHORTER[step]}"
        )
    if not lines:
        return None
    return "\n".join(
        [
            f"{len(lines)} CPU job(s) are estimated to take longer than their time limit and "
            "cannot resume: SLURM stops each at the limit and every retry starts over, so they "
            "never finish:",
            *lines,
        ]
    )


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
