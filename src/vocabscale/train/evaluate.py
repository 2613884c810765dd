"""Evaluation: the summed cross-entropy of a model over the whole evaluation text."""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass

import numpy as np
import torch

from vocabscale.train import distributed
from vocabscale.train.data import eval_batches
from vocabscale.train.distributed import Process
from vocabscale.train.model import Llama


@dataclass(frozen=True)
class EvalBatching:
    """How the evaluation text goes through the model: windows of `context` targets,
    `batch_size` windows a forward pass, the loss head `chunk_tokens` tokens at a time."""

    context: int
    batch_size: int
    chunk_tokens: int


@torch.no_grad()
def evaluate(
    model: Llama,
    tokens: np.ndarray,
    batching: EvalBatching,
    autocast: contextlib.AbstractContextManager,
    proc: Process | None = None,
) -> tuple[float, int]:
    """Summed cross-entropy (nats) over every target of `tokens`, and the number of targets;
    `proc` defaults to a single process on the model's device.

    The batches are the same whatever the number of processes; batch i is computed by process
    i mod world and the per-batch sums are added in batch order, so several processes give
    exactly the numbers one would. An FSDP model's forward pass is collective (it gathers each
    block's weights), so there every process makes as many passes, the last ones repeating a
    batch and discarding it.
    """
    proc = proc or Process(0, 1, next(model.parameters()).device)
    device = proc.device
    model.eval()
    batches = eval_batches(len(tokens), batching.context, batching.batch_size)
    sums = torch.zeros(len(batches), dtype=torch.float64, device=device)
    passes = len(batches)
    if is_sharded(model):
        passes = -(-passes // proc.world) * proc.world
    for index in range(proc.rank, passes, proc.world):
        length, starts = batches[min(index, len(batches) - 1)]
        batch = torch.from_numpy(
            np.stack([tokens[s : s + length] for s in starts]).astype(np.int64)
        ).to(device)
        with autocast:
            ce_sum = model(batch[:, :-1], batch[:, 1:], chunk_tokens=batching.chunk_tokens).double()
        if index < len(batches):
            sums[index] = ce_sum
    per_batch = distributed.all_sum(sums, proc).tolist()
    model.train()
    return sum(per_batch), sum(len(starts) * (length - 1) for length, starts in batches)


def is_sharded(model: torch.nn.Module) -> bool:
    """Whether FSDP wraps the model, without importing FSDP (seconds) where no run used it."""
    fsdp = sys.modules.get("torch.distributed.fsdp")
    return fsdp is not None and isinstance(model, fsdp.FSDPModule)
