"""A run's learning rate and evaluation points as functions of the step: a linear warmup, then
constant, cosine or wsd (`train.schedule`). Under wsd every evaluation point is a cooldown
branch off the peak-rate main trajectory, so that the point of D tokens is a run of D tokens
with its own decay (docs/design.md, "Every evaluation point a finished run")."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vocabscale.train.config import TrainConfig

SCHEDULES = ("constant", "cosine", "wsd")

#: How a wsd branch's rate falls from where it starts (1) to zero, over its progress x in [0, 1).
COOLDOWN_SHAPES = {
    "linear": lambda x: 1.0 - x,
    "1-sqrt": lambda x: 1.0 - math.sqrt(x),
    "cosine": lambda x: 0.5 * (1.0 + math.cos(math.pi * x)),
}


def warmup_steps(total_steps: int, config: TrainConfig) -> int:
    """Steps of linear warmup: `warmup_tokens` worth, or `warmup_fraction` of the run's."""
    if config.warmup_tokens is not None:
        return max(1, round(config.warmup_tokens / config.batch_tokens))
    return max(1, round(config.warmup_fraction * total_steps))


def learning_rate(step: int, total_steps: int, config: TrainConfig) -> float:
    """The main trajectory's rate at `step` of a run of `total_steps`: linear warmup, then the
    peak (constant, wsd) or a cosine decay to lr x min_lr_ratio (cosine)."""
    warmup = warmup_steps(total_steps, config)
    if step < warmup:
        return config.lr * (step + 1) / warmup
    if config.schedule != "cosine":
        return config.lr
    progress = (step - warmup) / max(1, total_steps - warmup)
    floor = config.lr * config.min_lr_ratio
    return floor + 0.5 * (config.lr - floor) * (1 + math.cos(math.pi * min(progress, 1.0)))


def cooldown_rate(start_rate: float, step: int, steps: int, shape: str) -> float:
    """Rate of step `step` (0-based) of a branch of `steps` steps that decays `start_rate` to
    zero: the decay's value at the middle of the step's share of it, so that even a branch of
    one step decays (to half the rate, linearly) and no step is wasted at a rate of zero."""
    return start_rate * COOLDOWN_SHAPES[shape]((step + 0.5) / steps)


@dataclass(frozen=True)
class EvalPoint:
    """One evaluation point: trained on `steps` global batches, the last `cooldown_steps` of
    them in a branch that starts from the main trajectory at `branch_from` (none: 0)."""

    index: int
    steps: int
    cooldown_steps: int

    @property
    def branch_from(self) -> int:
        return self.steps - self.cooldown_steps


def eval_steps(total_steps: int, evals: int) -> list[int]:
    """Steps of data of the evaluation points: `evals` points evenly spaced in tokens, the last
    one at the end of training."""
    return sorted({max(1, round(k * total_steps / evals)) for k in range(1, evals + 1)})


def eval_points(
    total_steps: int, evals: int, schedule: str, cooldown_fraction: float
) -> list[EvalPoint]:
    """The run's evaluation points. Under wsd a point of D steps branches off at
    D / (1 + cooldown_fraction) and cools down for the rest (at least one step)."""
    points = []
    for index, steps in enumerate(eval_steps(total_steps, evals)):
        cooldown = 0
        if schedule == "wsd":
            cooldown = min(
                steps, max(1, round(steps * cooldown_fraction / (1 + cooldown_fraction)))
            )
        points.append(EvalPoint(index, steps, cooldown))
    return points


def trained_steps(points: list[EvalPoint]) -> int:
    """Optimizer steps the run takes in all: the main trajectory up to the last branch, plus
    every branch (the last point's branch is the run's own end)."""
    return points[-1].branch_from + sum(point.cooldown_steps for point in points)
