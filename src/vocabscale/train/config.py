"""The `train` section of params.yaml as a typed record, and what its device and precision
settings resolve to on the machine a run lands on."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class TrainConfig:
    """The `train` section of params.yaml (defaults filled in by `vocabscale.config`)."""

    seed: int
    context: int
    batch_tokens: int
    micro_batch_size: int
    lr: float
    schedule: str
    min_lr_ratio: float
    warmup_fraction: float
    warmup_tokens: float | None
    cooldown_fraction: float
    cooldown_shape: str
    weight_decay: float
    beta1: float
    beta2: float
    grad_clip: float
    evals: int
    eval_batch_size: int
    head_chunk_tokens: int
    head_chunk_logits: int
    loss_head: str
    device: str
    precision: str
    compile: bool
    threads: int
    checkpoint_every: int

    @classmethod
    def from_params(cls, section: dict[str, Any]) -> TrainConfig:
        return cls(**section)


def resolved_precision(device: torch.device, precision: str) -> str:
    """`auto` is bf16 on CUDA and fp32 on CPU."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def autocast_for(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (the default there), full fp32 on CPU unless bf16 is asked for."""
    if resolved_precision(device, precision) == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
