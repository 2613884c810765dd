"""The sweep params.yaml asks for: its models, resolved to shapes, and the runs (model x V)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vocabscale.accounting import PAPER_SHAPES, ModelShape, training_memory


@dataclass(frozen=True)
class ModelSpec:
    """One model of the grid, resolved from a preset or an explicit shape."""

    name: str
    shape: ModelShape
    train_tokens: int
    gpus: int  # per node: one process each
    nodes: int
    parallel: str  # ddp, fsdp or auto (`parallelism` resolves it per run)

    @property
    def processes(self) -> int:
        """Processes of one run, over all its nodes: DDP's world size."""
        return self.nodes * self.gpus


def resolve_model(name: str, entry: dict[str, Any]) -> ModelSpec:
    """A `models.<name>` entry (defaults filled in) as a ModelSpec."""
    if "preset" in entry:
        shape = PAPER_SHAPES[entry["preset"]][0]
    else:
        shape = ModelShape(entry["n_layer"], entry["n_head"], entry["d_model"], entry["ffn"])
    return ModelSpec(
        name,
        shape,
        int(entry["train_tokens"]),
        int(entry["gpus"]),
        int(entry["nodes"]),
        entry["parallel"],
    )


def model_specs(params: dict[str, Any]) -> dict[str, ModelSpec]:
    return {name: resolve_model(name, entry) for name, entry in params["models"].items()}


def run_id(model: str, vocab_size: int) -> str:
    """The name of one training run, used in every path: `<model>-v<V>`."""
    return f"{model}-v{vocab_size}"


def run_grid(params: dict[str, Any]) -> list[str]:
    """Every run of the sweep: each model with each vocabulary size."""
    return [
        run_id(model, v) for model in params["models"] for v in params["tokenizer"]["vocab_sizes"]
    ]


@dataclass(frozen=True)
class Parallelism:
    """How one run spreads over its processes, and what that takes of one GPU."""

    kind: str  # "none" (one process), "ddp" or "fsdp"
    memory_bytes: float  # per GPU (per process), `accounting.training_memory`
    gpu_bytes: float | None  # the memory of one GPU; None for CPU processes


def parallelism(spec: ModelSpec, vocab_size: int, params: dict[str, Any]) -> Parallelism:
    """`models.<name>.parallel` for the run of `spec` at `vocab_size`: `auto` shards with FSDP
    when DDP's per-GPU memory estimate exceeds `cluster.gpu_memory_gb`. One process is neither
    (nothing to shard over); CPU processes have no GPU memory to fit, and `auto` takes DDP."""
    train = params["train"]
    gpu = train["device"] != "cpu"
    gpu_bytes = params["cluster"]["gpu_memory_gb"] * 1e9 if gpu else None
    precision = train["precision"]
    if precision == "auto":  # as `train.config.resolved_precision` resolves it
        precision = "bf16" if gpu else "fp32"

    def memory(shards: int) -> float:
        tokens = train["micro_batch_size"] * train["context"]
        logits = train["head_chunk_logits"]
        return training_memory(spec.shape, vocab_size, tokens, precision, logits, shards)

    kind = spec.parallel
    if spec.processes == 1:
        kind = "none"
    elif kind == "auto":
        kind = "fsdp" if gpu_bytes is not None and memory(1) > gpu_bytes else "ddp"
    return Parallelism(kind, memory(spec.processes if kind == "fsdp" else 1), gpu_bytes)
