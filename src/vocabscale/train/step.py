"""The arithmetic a training step is made of: the model and the AdamW optimizer a run starts
from, and the gradients of a global batch accumulated over micro-batches. Kept apart from the
loop so that the benchmarks time exactly what the runs do."""

from __future__ import annotations

import contextlib

import torch
from torch.nn.parallel import DistributedDataParallel

from vocabscale.sweep import ModelSpec
from vocabscale.train.config import TrainConfig
from vocabscale.train.model import Llama, head_chunk_rows


def build_model(
    spec: ModelSpec, vocab_size: int, config: TrainConfig, device: torch.device
) -> Llama:
    """The run's model, seeded by `config.seed`; each block compiled when `config.compile`
    (regional compilation: one graph reused by every block, the chunked head left eager)."""
    torch.manual_seed(config.seed)
    rows = head_chunk_rows(vocab_size, config.head_chunk_tokens, config.head_chunk_logits)
    model = Llama(spec.shape, vocab_size, config.context, rows, config.loss_head).to(device)
    if config.compile:
        for block in model.blocks:
            block.compile()
    return model


def build_optimizer(model: Llama, config: TrainConfig, device: torch.device):
    """AdamW; weight decay on matrices only (not on norm gains); fused kernel on CUDA."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        groups, lr=config.lr, betas=(config.beta1, config.beta2), fused=device.type == "cuda"
    )


def accumulate_gradients(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    micro_batch_size: int,
    autocast: contextlib.AbstractContextManager,
    loss_scale: float,
) -> torch.Tensor:
    """Forward and backward over this process's sequences, `micro_batch_size` at a time, so
    the gradients add up to those of loss_scale x (summed CE). Returns the summed CE as a
    tensor on the device (reading it waits for the GPU: the caller does that once a step).
    Under DDP the gradients are all-reduced once, after the last micro-batch; under FSDP they
    are reduce-scattered after every micro-batch, so that no process holds a whole gradient."""
    device = next(model.parameters()).device
    total = torch.zeros((), dtype=torch.float32, device=device)
    firsts = range(0, len(inputs), micro_batch_size)
    for first in firsts:
        x = inputs[first : first + micro_batch_size].to(device, non_blocking=True)
        y = targets[first : first + micro_batch_size].to(device, non_blocking=True)
        last = first == firsts[-1]
        no_sync = isinstance(model, DistributedDataParallel) and not last
        with model.no_sync() if no_sync else contextlib.nullcontext():
            with autocast:
                loss = model(x, y)
            (loss * loss_scale).backward()
        total += loss.detach()
    return total
