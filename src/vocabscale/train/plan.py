"""What one run does, fixed before its first step: its steps, evaluation points, data order,
precision and parallelism, computed once so that the loop, its checkpoints and its records
read the same numbers."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from vocabscale import accounting
from vocabscale.sweep import ModelSpec
from vocabscale.train.config import TrainConfig, resolved_precision
from vocabscale.train.data import RunData, WindowOrder
from vocabscale.train.distributed import Process
from vocabscale.train.schedule import EvalPoint, eval_points, trained_steps

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunPlan:
    """One run (`spec` on `data` with `config`) on this process (`proc`): `sequences` per
    global batch, `total_steps` of it, the evaluation `points`, the window `order`, the
    `precision` `auto` resolved to and the FLOPs per token (attention included)."""

    spec: ModelSpec
    data: RunData
    config: TrainConfig
    proc: Process
    sequences: int
    total_steps: int
    points: list[EvalPoint]
    order: WindowOrder
    precision: str
    flops_per_token: float

    @classmethod
    def make(cls, spec: ModelSpec, data: RunData, config: TrainConfig, proc: Process) -> RunPlan:
        """The plan; refuses a global batch that does not split evenly over the processes."""
        sequences = config.batch_tokens // config.context
        if sequences % proc.world:
            raise ValueError(
                f"train.batch_tokens / train.context = {sequences} sequences per step do "
                f"not split evenly over {proc.world} processes (models.{spec.name}.gpus)"
            )
        total_steps = spec.train_tokens // config.batch_tokens
        shape = spec.shape
        return cls(
            spec,
            data,
            config,
            proc,
            sequences,
            total_steps,
            eval_points(total_steps, config.evals, config.schedule, config.cooldown_fraction),
            WindowOrder(len(data.train), config.context, config.seed),
            resolved_precision(proc.device, config.precision),
            accounting.flops_per_token_with_attention(
                shape.non_vocab_params,
                data.vocab_size,
                shape.d_model,
                shape.n_layer,
                config.context,
            ),
        )

    @property
    def non_vocab(self) -> int:
        """Nnv, in closed form (the model's own count is checked against it)."""
        return self.spec.shape.non_vocab_params

    @property
    def sharded(self) -> bool:
        """FSDP: the model's training state is split over the processes."""
        return self.spec.parallel == "fsdp" and self.proc.world > 1

    @property
    def parallel(self) -> str:
        """fsdp, ddp (several processes, each with the whole model) or none."""
        return "fsdp" if self.sharded else "ddp" if self.proc.world > 1 else "none"

    @property
    def main_steps(self) -> int:
        """Steps of the main trajectory: to the last evaluation point's branch."""
        return self.points[-1].branch_from

    @property
    def history_every(self) -> int:
        """Steps between two rows of history.csv: about a hundred rows a run."""
        return max(1, self.main_steps // 100)

    def epochs(self, steps: int) -> float:
        """Passes over the training tokens that `steps` global batches make."""
        return self.order.epochs(steps * self.sequences)


def log_plan(plan: RunPlan, head_chunk_tokens: int) -> None:
    """What the run is about to do, in the log; a warning when it reads the corpus more than
    once."""
    spec, data, config = plan.spec, plan.data, plan.config
    log.info(
        "%s V=%d: Nnv %d, Nv %d, %d steps of %d tokens (%d per micro-batch x %d processes%s), "
        "%s on %s, loss head %d tokens per chunk",
        spec.name,
        data.vocab_size,
        plan.non_vocab,
        data.vocab_size * spec.shape.d_model,
        plan.total_steps,
        config.batch_tokens,
        config.micro_batch_size * config.context,
        plan.proc.world,
        "" if plan.parallel == "none" else f", {plan.parallel.upper()}",
        plan.precision,
        plan.proc.device,
        head_chunk_tokens,
    )
    log.info(
        "schedule %s: %d evaluation points, %d optimizer steps in all (%d on the main trajectory)",
        config.schedule,
        len(plan.points),
        trained_steps(plan.points),
        plan.main_steps,
    )
    epochs = plan.epochs(plan.total_steps)
    if epochs > 1:
        log.warning(
            "%s V=%d reads %d training tokens but the corpus holds %d: %.2f epochs, every "
            "epoch after the first reading the same windows again in a new order",
            spec.name,
            data.vocab_size,
            plan.total_steps * config.batch_tokens,
            len(data.train),
            epochs,
        )
