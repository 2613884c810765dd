"""How long the corpus and tokenizer steps run as SLURM CPU jobs, and the memory they hold.

Time comes from the characters a job reads at the throughputs measured in
benchmarks/RESULTS.md, so a job is sized for the corpus it will read; tokenization is sized
from the prepared corpus's stats.json once that exists (`rules.cpu_job_resource_callables`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vocabscale.cluster.cost import needed_minutes, time_limit
from vocabscale.corpus.sources import BUILTIN_PYTHON_DOCS, local_files
from vocabscale.io import read_json
from vocabscale.records import field


@dataclass(frozen=True)
class CpuJob:
    """A corpus or tokenizer step that runs as a SLURM CPU job."""

    threads: int  # the rule's threads: the CPUs of its job
    throughput: str  # the `cluster` setting of the characters it reads per second
    per_cpu: bool  # whether that throughput is per CPU (the job scales with its CPUs)
    resumes: bool  # whether a retry goes on from where the last attempt stopped


CPU_JOBS = {
    "prepare_corpus": CpuJob(4, "prepare_chars_per_s", per_cpu=False, resumes=False),
    "train_tokenizer": CpuJob(8, "tokenizer_train_chars_per_s", per_cpu=False, resumes=False),
    "tokenize": CpuJob(8, "tokenize_chars_per_cpu_s", per_cpu=True, resumes=True),
    "tokenize_part": CpuJob(8, "tokenize_chars_per_cpu_s", per_cpu=True, resumes=True),
}


@dataclass(frozen=True)
class CpuJobSize:
    """What one CPU job reads (None: unknown), the time limit and memory made from it, and the
    limit it would need to read it all in one job (None: unknown), before the cap."""

    characters: float | None
    runtime_minutes: int
    mem_mb: int
    needed_minutes: int | None


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
        record = read_json(stats)
        train, validation = (
            field(record, stats, "splits", split, "characters") for split in ("train", "validation")
        )
    elif (source := source_characters(params)) is not None:
        train, validation = source, 0
    else:
        return None
    share = train / params["tokenizer"]["tokenize_jobs"]
    return float(share if step == "tokenize_part" else share + validation)


def cpu_job_size(params: dict[str, Any], step: str, corpus_dir: Path | None = None) -> CpuJobSize:
    """Time limit and memory of a CPU job. Time from the characters it reads at the measured
    throughput for the rule's threads (a source of unknown size gets `max_runtime_minutes`),
    memory from what it holds; `cluster.cpu_job_runtime_minutes` and `cluster.cpu_job_mem_mb`
    override them."""
    cluster = params["cluster"]
    characters = cpu_job_characters(params, step, corpus_dir)
    needed = None
    if characters is not None:
        work_minutes = characters / cpu_job_rate(params, step) / 60
        needed = needed_minutes(work_minutes, 0, cluster)
    runtime = cluster["cpu_job_runtime_minutes"]
    if runtime is None and characters is None:
        runtime = cluster["max_runtime_minutes"]
    elif runtime is None:
        runtime, _ = time_limit(work_minutes, 0, cluster, step)
    memory = cluster["cpu_job_mem_mb"]
    if memory is None:
        memory = cluster["cpu_job_base_mem_mb"]
        if step == "train_tokenizer":
            sample = params["corpus"]["tokenizer_sample_characters"]
            memory += math.ceil(sample * cluster["tokenizer_train_bytes_per_char"] / 1e6)
    return CpuJobSize(characters, runtime, memory, needed)


def cpu_job_rate(params: dict[str, Any], step: str) -> float:
    """Characters per second a CPU job reads, at the rule's threads."""
    job = CPU_JOBS[step]
    return params["cluster"][job.throughput] * (job.threads if job.per_cpu else 1)
