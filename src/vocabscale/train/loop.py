"""The training loop of one run: the main trajectory's steps and, at each evaluation point,
its wsd cooldown branch, its evaluation and a checkpoint.

Safe to kill: the state is saved at every evaluation point and every `checkpoint_every` steps,
so SIGKILL loses at most the steps since; SIGTERM finishes the step, saves and raises
Preempted. The batch of a step is a pure function of (seed, step), so a resumed run, every
process of a multi-process run and a wsd branch read the data an uninterrupted run reads
(docs/design.md, "Every evaluation point a finished run").
"""

from __future__ import annotations

import gc
import logging
import math
import signal
import time
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from vocabscale.sweep import ModelSpec
from vocabscale.train import distributed, live, sharded
from vocabscale.train.checkpointer import Checkpointer
from vocabscale.train.config import TrainConfig, autocast_for
from vocabscale.train.data import RunData, training_batch
from vocabscale.train.evaluate import EvalBatching, evaluate
from vocabscale.train.plan import RunPlan, log_plan
from vocabscale.train.records import RunState, eval_record, history_row, summary, write_run_dir
from vocabscale.train.schedule import EvalPoint, cooldown_rate, learning_rate, trained_steps
from vocabscale.train.step import accumulate_gradients, build_model, build_optimizer

log = logging.getLogger(__name__)


class Preempted(RuntimeError):
    """SIGTERM arrived; the state was checkpointed."""


class SigtermFlag:
    """Turns SIGTERM into a flag the loop checks between steps."""

    def __init__(self) -> None:
        self.raised = False

    def __enter__(self) -> SigtermFlag:
        self.previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.raised = True

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGTERM, self.previous)


class Trainer:
    """One run on this process: its model, optimizer and state, and the steps that advance
    them. `train()` runs to the end (or to divergence, or raises Preempted); `write_outputs()`
    writes the run directory."""

    def __init__(
        self, plan: RunPlan, checkpoint_dir: Path, inject_nan_at_step: int | None = None
    ) -> None:
        self.plan = plan
        spec, config, proc = plan.spec, plan.config, plan.proc
        self.autocast = autocast_for(proc.device, config.precision)
        self.model = build_model(spec, plan.data.vocab_size, config, proc.device)
        counted = self.model.non_vocab_parameters()
        if counted != plan.non_vocab:
            raise AssertionError(f"Nnv {counted} != closed form {plan.non_vocab}")
        if plan.sharded:  # before the optimizer: sharding replaces the parameters
            sharded.shard(self.model, proc)
        self.optimizer = build_optimizer(self.model, config, proc.device)
        self.checkpointer = Checkpointer(plan, self.model, self.optimizer, checkpoint_dir)
        self.state = RunState()
        self.inject_nan_at_step = inject_nan_at_step
        self.train_model: torch.nn.Module = self.model
        self.steps_taken = 0  # optimizer steps taken by this process, for its speed
        self.last_loss = math.nan  # training loss of the last step

    # --- resume state ------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The main trajectory's resume state: training state, schedule position, records."""
        step, plan = self.state.step, self.plan
        return {
            **self.checkpointer.training_state(),
            "total_steps": plan.total_steps,
            "schedule": {"step": step, "lr": learning_rate(step, plan.total_steps, plan.config)},
            **self.state.state_dict(),
            "processes": plan.proc.world,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.checkpointer.load_training_state(state)
        self.state.load_state_dict(state)

    def resume(self, out_dir: Path) -> None:
        """Continue from the saved state when it belongs to this run, else start at step 0.
        A state that cannot be read stops every process (UnreadableState) before rank 0
        clears any leftover."""
        state = self.checkpointer.read(self.checkpointer.state_path)
        if self.plan.proc.main:
            self.checkpointer.remove_leftovers(out_dir)
        if state is not None:
            self.load_state_dict(state)
            total = self.plan.total_steps
            log.info("resuming %s from step %d of %d", out_dir, self.state.step, total)

    def save_checkpoint(self) -> None:
        self.checkpointer.save(self.checkpointer.state_path, self.state_dict())

    # --- one step ----------------------------------------------------------------------------

    def optimizer_step(self, data_step: int, lr: float, stop_requested: bool) -> tuple[float, bool]:
        """One optimizer step at rate `lr` on the global batch of `data_step`. Returns the
        gradient norm and whether any process has been asked to stop; sets
        `state.diverged_at` (and changes nothing) when the loss or the gradient norm is not
        finite."""
        plan, config, proc = self.plan, self.plan.config, self.plan.proc
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        inputs, targets = training_batch(
            plan.data.train, plan.order, data_step, plan.sequences, proc.rank, proc.world
        )
        if proc.device.type == "cuda":
            inputs, targets = inputs.pin_memory(), targets.pin_memory()
        # DDP averages gradients over processes: scale so they sum to d(mean CE).
        local_ce = accumulate_gradients(
            self.train_model,
            inputs,
            targets,
            config.micro_batch_size,
            self.autocast,
            proc.world / config.batch_tokens,
        )
        clip = config.grad_clip if config.grad_clip > 0 else math.inf
        norm = sharded.clip_gradients(list(self.model.parameters()), clip)
        stop_flag = torch.tensor(float(stop_requested), device=proc.device)
        summed = distributed.all_sum(torch.stack([local_ce, stop_flag]), proc)
        ce_sum, stop, grad_norm = torch.cat([summed, norm.reshape(1).float()]).tolist()
        loss = ce_sum / config.batch_tokens
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            self.state.diverged_at = data_step
            log.error(
                "step %d: training loss %s, gradient norm %s: the run diverged",
                data_step,
                loss,
                grad_norm,
            )
            return grad_norm, bool(stop)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.steps_taken += 1
        self.last_loss = loss
        return grad_norm, bool(stop)

    def train_step(self, stop_requested: bool) -> bool:
        """One step of the main trajectory; returns whether any process has been asked to
        stop."""
        step, config = self.state.step, self.plan.config
        lr = learning_rate(step, self.plan.total_steps, config)
        if step == self.inject_nan_at_step:  # tests: a blown-up update
            with torch.no_grad():
                self.model.output.weight[0, 0] = float("nan")
        grad_norm, stop = self.optimizer_step(step, lr, stop_requested)
        if self.state.diverged_at is None:
            self.state.step += 1
            self.record_history(lr, self.last_loss, grad_norm)
            live.log_step(step + 1, (step + 1) * config.batch_tokens, self.last_loss, lr)
        return stop

    def record_history(self, lr: float, loss: float, grad_norm: float) -> None:
        """Keep about a hundred points of the training curve, and the last step."""
        step, plan = self.state.step, self.plan
        if step % plan.history_every == 0 or step == plan.main_steps:
            self.state.history.append(
                history_row(step, plan.config.batch_tokens, lr, loss, grad_norm)
            )

    # --- evaluation points -------------------------------------------------------------------

    def next_point(self) -> EvalPoint | None:
        done, points = len(self.state.records), self.plan.points
        return points[done] if done < len(points) else None

    def take_point(self, point: EvalPoint, sigterm: SigtermFlag, progress: tqdm) -> None:
        """Evaluate `point` (the main trajectory stands at its branch point): after its
        cooldown branch under wsd, then back to the main trajectory, unless it is the last."""
        if point.cooldown_steps:
            self.run_branch(point, sigterm, progress)
            if self.state.diverged_at is not None:
                return
        self.evaluate_checkpoint(point)
        if self.state.diverged_at is not None:
            return
        checkpointer = self.checkpointer
        if point.cooldown_steps and point is not self.plan.points[-1]:
            main = checkpointer.read(checkpointer.state_path)  # saved by run_branch at its start
            if main is None or main["step"] != point.branch_from:
                raise RuntimeError(
                    f"{checkpointer.state_path} no longer holds step {point.branch_from}"
                )
            checkpointer.load_training_state(main)
        self.save_checkpoint()
        if self.plan.proc.main:
            checkpointer.remove_branch()

    def run_branch(self, point: EvalPoint, sigterm: SigtermFlag, progress: tqdm) -> None:
        """The cooldown of `point`: its rate decays from the main trajectory's at the branch
        point to zero over `point.cooldown_steps` steps, on the batches the main trajectory
        reads next. Saved to `branch.pt` every `checkpoint_every` steps and at SIGTERM (then
        Preempted is raised); a saved branch of this point is continued."""
        config = self.plan.config
        start_rate = learning_rate(point.branch_from, self.plan.total_steps, config)
        done = self.resume_branch(point)
        progress.update(done)
        for step in range(done, point.cooldown_steps):
            lr = cooldown_rate(start_rate, step, point.cooldown_steps, config.cooldown_shape)
            _, stop = self.optimizer_step(point.branch_from + step, lr, sigterm.raised)
            if self.state.diverged_at is not None:
                return
            progress.update(1)
            every = config.checkpoint_every
            if stop or (every and not (step + 1) % every):
                self.save_branch(point, step + 1)
            if stop:
                self.stop_together()
                raise Preempted(
                    f"SIGTERM in the cooldown branch of evaluation point {point.index + 1}, at "
                    f"step {step + 1} of {point.cooldown_steps}: state saved to "
                    f"{self.checkpointer.branch_path}"
                )

    def resume_branch(self, point: EvalPoint) -> int:
        """Steps of `point`'s branch already taken: those of its saved branch, loaded; else 0,
        once the main trajectory is saved at the branch point (to return to afterwards)."""
        branch = self.checkpointer.read(self.checkpointer.branch_path)
        if branch is not None and branch["point"] == point.index:
            self.checkpointer.load_training_state(branch)
            log.info(
                "resuming the cooldown of evaluation point %d at step %d of %d",
                point.index + 1,
                branch["step"],
                point.cooldown_steps,
            )
            return branch["step"]
        self.save_checkpoint()
        return 0

    def save_branch(self, point: EvalPoint, done: int) -> None:
        checkpointer = self.checkpointer
        state = {**checkpointer.training_state(), "point": point.index, "step": done}
        checkpointer.save(checkpointer.branch_path, state)

    def evaluate_checkpoint(self, point: EvalPoint) -> None:
        """Evaluate the model as it stands, as `point`, and record it; sets
        `state.diverged_at` instead when the evaluation loss is not finite."""
        plan, config = self.plan, self.plan.config
        batching = EvalBatching(
            config.context, config.eval_batch_size, self.model.head_chunk_tokens
        )
        ce_sum, count = evaluate(
            self.model, plan.data.validation, batching, self.autocast, plan.proc
        )
        if not math.isfinite(ce_sum):
            self.state.diverged_at = point.steps
            log.error("evaluation loss is %s at step %d: the run diverged", ce_sum, point.steps)
            return
        self.state.records.append(eval_record(plan, point, ce_sum, count))
        tokens_per_second = (
            self.steps_taken * config.batch_tokens / max(time.perf_counter() - self.started, 1e-9)
        )
        log.info(
            "step %d/%d: eval loss %.4f, train loss %.4f, %.0f tokens/s, %.3g FLOP/s",
            point.steps,
            plan.total_steps,
            ce_sum / count,
            self.last_loss,
            tokens_per_second,
            tokens_per_second * plan.flops_per_token,
        )

    # --- the loop ----------------------------------------------------------------------------

    def train(self) -> None:
        """Step until the end of the run or divergence, taking each evaluation point as the
        main trajectory reaches it; at SIGTERM, checkpoint and raise Preempted."""
        self.prepare()
        with SigtermFlag() as sigterm, self.progress_bar() as progress:
            while (point := self.next_point()) is not None:
                if self.state.step == point.branch_from:
                    self.take_point(point, sigterm, progress)
                    if self.state.diverged_at is not None:
                        break
                    continue
                stop = self.train_step(sigterm.raised)
                if self.state.diverged_at is not None:
                    break
                progress.update(1)
                every = self.plan.config.checkpoint_every
                if stop or (every and not self.state.step % every):
                    self.save_checkpoint()
                if stop:
                    self.stop_together()
                    raise Preempted(
                        f"SIGTERM at step {self.state.step}: state saved to "
                        f"{self.checkpointer.state_path}"
                    )

    def stop_together(self) -> None:
        """At SIGTERM, once the state is saved: every process stops at this step."""
        distributed.stop_together(self.plan.proc, self.checkpointer.directory, self.state.step)

    def prepare(self) -> None:
        """DDP around the model when there are several processes (unless it is sharded); the
        checkpoint directory; what the run is about to do, in the log."""
        if self.plan.parallel == "ddp":
            # DDP broadcasts rank 0's weights and averages gradients (in place in its
            # communication buckets); `model` stays the plain module used for evaluation and
            # checkpoints. The only buffers are the RoPE tables, the same everywhere.
            self.train_model = DistributedDataParallel(
                self.model, broadcast_buffers=False, gradient_as_bucket_view=True
            )
        if self.plan.proc.main:
            self.checkpointer.directory.mkdir(parents=True, exist_ok=True)
        log_plan(self.plan, self.model.head_chunk_tokens)
        self.started = time.perf_counter()

    def progress_bar(self) -> tqdm:
        """Every optimizer step of the run, cooldown branches included."""
        plan = self.plan
        recorded = plan.points[: len(self.state.records)]
        return tqdm(
            total=trained_steps(plan.points),
            initial=self.state.step + sum(point.cooldown_steps for point in recorded),
            desc=f"train {plan.spec.name} V={plan.data.vocab_size}",
            unit="step",
            mininterval=2,
            disable=None if plan.proc.main else True,  # None: only on a terminal
        )

    def write_outputs(self, out_dir: Path) -> dict[str, Any]:
        """The run's directory, written atomically by rank 0; returns run.json's content.
        model.pt holds the last point's weights (after its cooldown under wsd), the whole
        model's under FSDP too (gathered on rank 0)."""
        total_params = sum(p.numel() for p in self.model.parameters())
        run = summary(self.plan, self.state, out_dir.name, total_params)
        if self.plan.sharded:
            weights = sharded.full_weights(self.model)
        else:
            weights = {k: v.cpu() for k, v in self.model.state_dict().items()}
        if self.plan.proc.main:
            write_run_dir(out_dir, self.state, run, weights)
        return run


def train_run(
    spec: ModelSpec,
    tokens_dir: str | Path,
    config: TrainConfig,
    out_dir: str | Path,
    checkpoint_dir: str | Path,
    inject_nan_at_step: int | None = None,
) -> dict[str, Any]:
    """Train (or resume) one run and write its outputs; returns run.json's content.

    `inject_nan_at_step` (tests) puts a NaN into the output head before that step, as a
    blown-up update would.
    """
    out_dir, checkpoint_dir = Path(out_dir), Path(checkpoint_dir)
    data = RunData.load(tokens_dir, config.context)
    if config.threads:
        torch.set_num_threads(config.threads)
    proc = distributed.setup(config.device)
    trainer = None
    try:
        if proc.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True  # what fp32 matmuls remain
            torch.backends.cudnn.allow_tf32 = True
        plan = RunPlan.make(spec, data, config, proc)
        trainer = Trainer(plan, checkpoint_dir, inject_nan_at_step)
        trainer.resume(out_dir)
        trainer.train()
        return trainer.write_outputs(out_dir)
    finally:
        # The model wrapped by DDP or FSDP holds the process group. Freed after the group is
        # destroyed, it would run gloo's destructor holding the GIL, which joins threads that
        # wait for the GIL: a hang after the run is written (seen under SLURM). So free it first.
        del trainer
        gc.collect()
        distributed.teardown()
