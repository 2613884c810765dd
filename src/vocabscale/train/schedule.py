"""When a run changes its learning rate and when it is evaluated, as functions of the step."""

from __future__ import annotations

import math

from vocabscale.train.config import TrainConfig


def learning_rate(step: int, total_steps: int, config: TrainConfig) -> float:
    """Linear warmup over `warmup_fraction` of the steps, then cosine decay to min_lr_ratio."""
    warmup = max(1, round(config.warmup_fraction * total_steps))
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    floor = config.lr * config.min_lr_ratio
    return floor + 0.5 * (config.lr - floor) * (1 + math.cos(math.pi * min(progress, 1.0)))


def eval_steps(total_steps: int, evals: int) -> list[int]:
    """Steps after which to evaluate: `evals` points evenly spaced in tokens, the last one at
    the end of training."""
    return sorted({max(1, round(k * total_steps / evals)) for k in range(1, evals + 1)})
