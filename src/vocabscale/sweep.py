"""The sweep params.yaml asks for: its models, resolved to shapes, and the runs (model x V)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vocabscale.accounting import PAPER_SHAPES, ModelShape


@dataclass(frozen=True)
class ModelSpec:
    """One model of the grid, resolved from a preset or an explicit shape."""

    name: str
    shape: ModelShape
    train_tokens: int
    gpus: int  # per node: one process each
    nodes: int

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
        name, shape, int(entry["train_tokens"]), int(entry["gpus"]), int(entry["nodes"])
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
