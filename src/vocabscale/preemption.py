"""What a run needs to survive preemption: the size of its resume state, and the grace window
between SIGTERM and the kill (SLURM's `--signal`, set in `vocabscale.cluster.slurm`; torchrun's
shutdown timeout) in which it finishes its step, writes that state and exits."""

from __future__ import annotations

import math
from typing import Any

from vocabscale.accounting import ModelShape, vocab_params

#: fp32 weights and AdamW's two fp32 moments, per parameter
STATE_BYTES_PER_PARAMETER = 12


def state_bytes(shape: ModelShape, vocab_size: int) -> int:
    """Bytes of a run's resume state: weights and AdamW moments of every parameter, the
    embedding and the (untied) output head included; records and RNG states are small."""
    parameters = shape.non_vocab_params + 2 * vocab_params(vocab_size, shape.d_model)
    return STATE_BYTES_PER_PARAMETER * int(parameters)


def write_seconds(shape: ModelShape, vocab_size: int, cluster: dict[str, Any]) -> float:
    """How long one process takes to write the resume state at
    `cluster.checkpoint_write_mb_per_s`."""
    return state_bytes(shape, vocab_size) / (cluster["checkpoint_write_mb_per_s"] * 1e6)


def grace_seconds(shape: ModelShape, vocab_size: int, cluster: dict[str, Any]) -> int:
    """The grace window: two writes of the state with `cluster.runtime_safety` (a SIGTERM that
    lands on an evaluation step saves after the evaluation and again on stopping), plus
    `cluster.grace_base_seconds` for the steps in flight and the exit."""
    writes = 2 * write_seconds(shape, vocab_size, cluster)
    return cluster["grace_base_seconds"] + math.ceil(cluster["runtime_safety"] * writes)
