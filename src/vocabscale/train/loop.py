"""The training loop of one run = one model shape x one tokenizer, evaluated at fixed points.

AdamW after a linear warmup, at the rate of `train.schedule` (`schedule`): constant, cosine,
or wsd, whose every evaluation point is a cooldown branch off the main trajectory. Gradient
accumulation to `batch_tokens` per step; evaluation of the summed cross-entropy over the whole
evaluation text at `evals` points evenly spaced in tokens (`evaluate`). The data is read once,
in a seeded permutation of windows per epoch (`data.WindowOrder`); the batch of a step is a
pure function of (seed, step), so a run resumed from its last checkpoint sees exactly the data
an uninterrupted run would, and so does each process of a multi-GPU run (it takes its rows of
the same global batch). A wsd branch reads the batches the main trajectory reads next, so a
point of D tokens has seen exactly the first D tokens of the stream.

On CUDA: bf16 autocast, flash attention through `scaled_dot_product_attention`, fused AdamW,
optional `torch.compile` of each block, and a loss head that never holds more than
`head_chunk_logits` logits (`model.summed_cross_entropy`). Several GPUs: DDP under torchrun
(`distributed`), or FSDP for a model whose training state does not fit one GPU (`sharded`).

Safe to kill: the state is saved atomically at every evaluation point and every
`checkpoint_every` steps (`checkpoint`); a wsd branch starts from the main trajectory's state
saved at its branch point, saves its own progress beside it, and the main trajectory is
reloaded from that state afterwards, bit for bit. SIGKILL loses at most the steps since the
last save; SIGTERM finishes the current step, saves, and raises Preempted. Under FSDP every
process writes its shards and rank 0 then the file that names them (`sharded`).

Outputs (one directory per run, written at the end, atomically):
  evals.csv    one row per evaluation point: step, tokens, characters, flops (the point's own,
               its branch included), eval CE sum, eval tokens, schedule, cooldown tokens, epochs
  history.csv  training loss, gradient norm and learning rate along the main trajectory
  run.json     shape, exact Nnv and Nv, budgets, schedule, epochs, whether the run diverged
  model.pt     final weights (of the last point, after its cooldown under wsd)
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from vocabscale import accounting
from vocabscale.io import atomic_dir, write_csv, write_json
from vocabscale.sweep import ModelSpec
from vocabscale.train import distributed, live, sharded
from vocabscale.train.checkpoint import (
    fingerprint,
    read_state,
    remove_stale_temporaries,
    rng_state,
    save_state,
    set_rng_state,
)
from vocabscale.train.config import TrainConfig, autocast_for, resolved_precision
from vocabscale.train.data import RunData, WindowOrder, training_batch
from vocabscale.train.distributed import Process
from vocabscale.train.evaluate import evaluate
from vocabscale.train.model import Llama, head_chunk_rows
from vocabscale.train.schedule import (
    EvalPoint,
    cooldown_rate,
    eval_points,
    learning_rate,
    trained_steps,
)

log = logging.getLogger(__name__)

EVAL_COLUMNS = (
    "step",
    "tokens",
    "characters",
    "flops",
    "flops_with_attention",
    "eval_ce_sum",
    "eval_tokens",
    "schedule",
    "cooldown_tokens",
    "epochs",
)
HISTORY_COLUMNS = ("step", "tokens", "lr", "train_loss", "grad_norm")


class Preempted(RuntimeError):
    """SIGTERM arrived; the state was checkpointed."""


@dataclass
class RunState:
    """How far a run has got. `step` is the main trajectory's step, which is also its data
    position: batches are a function of it. `records` are the evaluation points so far,
    `history` the training loss along the main trajectory."""

    step: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    diverged_at: int | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "records": self.records, "history": self.history}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step, self.records, self.history = state["step"], state["records"], state["history"]


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
    them. `train()` runs to the end (or to divergence, or raises Preempted); `outputs()` is
    what the run writes."""

    def __init__(
        self,
        spec: ModelSpec,
        data: RunData,
        config: TrainConfig,
        proc: Process,
        checkpoint_dir: Path,
        inject_nan_at_step: int | None = None,
    ) -> None:
        self.spec, self.data, self.config, self.proc = spec, data, config, proc
        self.sharded = spec.parallel == "fsdp" and proc.world > 1
        self.sequences = config.batch_tokens // config.context
        if self.sequences % proc.world:
            raise ValueError(
                f"train.batch_tokens / train.context = {self.sequences} sequences per step do "
                f"not split evenly over {proc.world} processes (models.{spec.name}.gpus)"
            )
        self.total_steps = spec.train_tokens // config.batch_tokens
        self.points = eval_points(
            self.total_steps, config.evals, config.schedule, config.cooldown_fraction
        )
        self.order = WindowOrder(len(data.train), config.context, config.seed)
        self.precision = resolved_precision(proc.device, config.precision)
        self.autocast = autocast_for(proc.device, config.precision)
        self.model = build_model(spec, data.vocab_size, config, proc.device)
        self.non_vocab = self.model.non_vocab_parameters()
        if self.non_vocab != spec.shape.non_vocab_params:
            raise AssertionError(
                f"Nnv {self.non_vocab} != closed form {spec.shape.non_vocab_params}"
            )
        if self.sharded:  # before the optimizer: sharding replaces the parameters
            sharded.shard(self.model, proc)
        self.optimizer = build_optimizer(self.model, config, proc.device)
        self.fingerprint = fingerprint(
            spec, data.vocab_size, config, data.content_digest, self.precision
        )
        self.flops_per_token = accounting.flops_per_token_with_attention(
            self.non_vocab, data.vocab_size, spec.shape.d_model, spec.shape.n_layer, config.context
        )
        self.state = RunState()
        self.state_path = checkpoint_dir / "state.pt"
        self.branch_path = checkpoint_dir / "branch.pt"
        self.inject_nan_at_step = inject_nan_at_step
        self.train_model: torch.nn.Module = self.model
        self.steps_taken = 0  # optimizer steps taken by this process, for its speed
        self.last_loss = math.nan  # training loss of the last step

    # --- resume state ------------------------------------------------------------------------

    def training_state(self) -> dict[str, Any]:
        """What the arithmetic continues from: weights, optimizer, random generators (under
        FSDP the weights and optimizer go to the shards `save` writes)."""
        state = {"fingerprint": self.fingerprint, "rng": rng_state(self.proc.device)}
        if self.sharded:
            return state
        return {**state, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_training_state(self, state: dict[str, Any]) -> None:
        if self.sharded:
            sharded.load(state, self.state_path.parent, self.model, self.optimizer)
        else:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"], self.proc.device)

    def save(self, path: Path, state: dict[str, Any]) -> None:
        """Write `state` (with `training_state()` in it) to `path`: rank 0 alone under DDP
        (every rank holds the same weights), every rank its shards under FSDP."""
        if self.sharded:
            sharded.save(path, self.model, self.optimizer, state, self.proc)
        elif self.proc.main:
            save_state(path, state)

    def state_dict(self) -> dict[str, Any]:
        step = self.state.step
        return {
            **self.training_state(),
            "total_steps": self.total_steps,
            "schedule": {"step": step, "lr": learning_rate(step, self.total_steps, self.config)},
            **self.state.state_dict(),
            "processes": self.proc.world,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.load_training_state(state)
        self.state.load_state_dict(state)

    def read(self, path: Path) -> dict[str, Any] | None:
        """A saved state of this run (matching fingerprint), or None."""
        if not path.exists():
            return None
        state = read_state(path, mmap=self.proc.device.type == "cuda")
        if state is not None and state["fingerprint"] != self.fingerprint:
            log.warning("%s belongs to other settings or data; not resumed", path)
            return None
        if state is not None and (sharded.SHARDS in state) != self.sharded:
            written, now = ("FSDP", "DDP") if sharded.SHARDS in state else ("DDP", "FSDP")
            log.warning("%s was written under %s; this run is %s: not resumed", path, written, now)
            return None
        return state

    def resume(self, out_dir: Path) -> None:
        """Continue from the saved state when it belongs to this run, else start at step 0."""
        if self.proc.main:
            remove_stale_temporaries(out_dir, self.state_path.parent)
            if self.sharded:
                sharded.remove_unnamed(self.state_path.parent, [self.state_path, self.branch_path])
        state = self.read(self.state_path)
        if state is not None:
            self.load_state_dict(state)
            log.info("resuming %s from step %d of %d", out_dir, self.state.step, self.total_steps)

    def save_checkpoint(self) -> None:
        self.save(self.state_path, self.state_dict())

    # --- one step ----------------------------------------------------------------------------

    def optimizer_step(self, data_step: int, lr: float, stop_requested: bool) -> tuple[float, bool]:
        """One optimizer step at rate `lr` on the global batch of `data_step`. Returns the
        gradient norm and whether any process has been asked to stop; sets
        `state.diverged_at` (and changes nothing) when the loss or the gradient norm is not
        finite."""
        config, proc = self.config, self.proc
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        inputs, targets = training_batch(
            self.data.train, self.order, data_step, self.sequences, proc.rank, proc.world
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
        step = self.state.step
        lr = learning_rate(step, self.total_steps, self.config)
        if step == self.inject_nan_at_step:  # tests: a blown-up update
            with torch.no_grad():
                self.model.output.weight[0, 0] = float("nan")
        grad_norm, stop = self.optimizer_step(step, lr, stop_requested)
        if self.state.diverged_at is None:
            self.state.step += 1
            self.record_history(lr, self.last_loss, grad_norm)
            live.log_step(step + 1, (step + 1) * self.config.batch_tokens, self.last_loss, lr)
        return stop

    def record_history(self, lr: float, loss: float, grad_norm: float) -> None:
        """Keep about a hundred points of the training curve, and the last step."""
        step = self.state.step
        if step % self.log_every == 0 or step == self.main_steps:
            self.state.history.append(
                {
                    "step": step,
                    "tokens": step * self.config.batch_tokens,
                    "lr": lr,
                    "train_loss": loss,
                    "grad_norm": grad_norm,
                }
            )

    # --- evaluation points -------------------------------------------------------------------

    @property
    def main_steps(self) -> int:
        """Steps of the main trajectory: to the last evaluation point's branch."""
        return self.points[-1].branch_from

    def next_point(self) -> EvalPoint | None:
        done = len(self.state.records)
        return self.points[done] if done < len(self.points) else None

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
        if point.cooldown_steps and point is not self.points[-1]:
            main = self.read(self.state_path)  # saved by run_branch at the branch point
            if main is None or main["step"] != point.branch_from:
                raise RuntimeError(f"{self.state_path} no longer holds step {point.branch_from}")
            self.load_training_state(main)
        self.save_checkpoint()
        if self.proc.main and self.sharded:
            sharded.remove(self.branch_path)
        elif self.proc.main:
            self.branch_path.unlink(missing_ok=True)

    def run_branch(self, point: EvalPoint, sigterm: SigtermFlag, progress: tqdm) -> None:
        """The cooldown of `point`: its rate decays from the main trajectory's at the branch
        point to zero over `point.cooldown_steps` steps, on the batches the main trajectory
        reads next. Saved to `branch.pt` every `checkpoint_every` steps and at SIGTERM (then
        Preempted is raised); a saved branch of this point is continued."""
        config = self.config
        start_rate = learning_rate(point.branch_from, self.total_steps, config)
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
                distributed.stop_together(self.proc, self.state_path.parent, self.state.step)
                raise Preempted(
                    f"SIGTERM in the cooldown branch of evaluation point {point.index + 1}, at "
                    f"step {step + 1} of {point.cooldown_steps}: state saved to {self.branch_path}"
                )

    def resume_branch(self, point: EvalPoint) -> int:
        """Steps of `point`'s branch already taken: those of its saved branch, loaded; else 0,
        once the main trajectory is saved at the branch point (to return to afterwards)."""
        branch = self.read(self.branch_path)
        if branch is not None and branch["point"] == point.index:
            self.load_training_state(branch)
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
        self.save(self.branch_path, {**self.training_state(), "point": point.index, "step": done})

    def evaluate_checkpoint(self, point: EvalPoint) -> None:
        """Evaluate the model as it stands, as `point`, and record it; sets
        `state.diverged_at` instead when the evaluation loss is not finite."""
        config = self.config
        ce_sum, count = evaluate(
            self.model,
            self.data.validation,
            config.context,
            config.eval_batch_size,
            self.proc.device,
            self.autocast,
            self.model.head_chunk_tokens,
            self.proc,
        )
        if not math.isfinite(ce_sum):
            self.state.diverged_at = point.steps
            log.error("evaluation loss is %s at step %d: the run diverged", ce_sum, point.steps)
            return
        self.state.records.append(self.record(point, ce_sum, count))
        tokens_per_second = (
            self.steps_taken * config.batch_tokens / max(time.perf_counter() - self.started, 1e-9)
        )
        log.info(
            "step %d/%d: eval loss %.4f, train loss %.4f, %.0f tokens/s, %.3g FLOP/s",
            point.steps,
            self.total_steps,
            ce_sum / count,
            self.last_loss,
            tokens_per_second,
            tokens_per_second * self.flops_per_token,
        )

    def record(self, point: EvalPoint, ce_sum: float, count: int) -> dict[str, Any]:
        """One row of evals.csv. The point's tokens, characters and FLOPs are those of the
        data it has been trained on, its cooldown branch's included."""
        batch_tokens, shape = self.config.batch_tokens, self.spec.shape
        tokens = point.steps * batch_tokens
        return {
            "step": point.steps,
            "tokens": tokens,
            "characters": tokens * self.data.characters_per_token,
            "flops": accounting.flops(self.non_vocab, self.data.vocab_size, shape.d_model, tokens),
            "flops_with_attention": tokens * self.flops_per_token,
            "eval_ce_sum": ce_sum,
            "eval_tokens": count,
            "schedule": self.config.schedule,
            "cooldown_tokens": point.cooldown_steps * batch_tokens,
            "epochs": self.order.epochs(point.steps * self.sequences),
        }

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
                every = self.config.checkpoint_every
                if stop or (every and not self.state.step % every):
                    self.save_checkpoint()
                if stop:
                    distributed.stop_together(self.proc, self.state_path.parent, self.state.step)
                    raise Preempted(
                        f"SIGTERM at step {self.state.step}: state saved to {self.state_path}"
                    )

    def prepare(self) -> None:
        """DDP around the model when there are several processes (unless it is sharded); the
        checkpoint directory; what the run is about to do, in the log."""
        if self.proc.world > 1 and not self.sharded:
            # DDP broadcasts rank 0's weights and averages gradients (in place in its
            # communication buckets); `model` stays the plain module used for evaluation and
            # checkpoints. The only buffers are the RoPE tables, the same everywhere.
            self.train_model = DistributedDataParallel(
                self.model, broadcast_buffers=False, gradient_as_bucket_view=True
            )
        if self.proc.main:
            self.state_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_start()
        self.log_every = max(1, self.main_steps // 100)
        self.started = time.perf_counter()

    def progress_bar(self) -> tqdm:
        """Every optimizer step of the run, cooldown branches included."""
        recorded = self.points[: len(self.state.records)]
        return tqdm(
            total=trained_steps(self.points),
            initial=self.state.step + sum(point.cooldown_steps for point in recorded),
            desc=f"train {self.spec.name} V={self.data.vocab_size}",
            unit="step",
            mininterval=2,
            disable=None if self.proc.main else True,  # None: only on a terminal
        )

    def log_start(self) -> None:
        config = self.config
        log.info(
            "%s V=%d: Nnv %d, Nv %d, %d steps of %d tokens (%d per micro-batch x %d processes%s), "
            "%s on %s, loss head %d tokens per chunk",
            self.spec.name,
            self.data.vocab_size,
            self.non_vocab,
            self.data.vocab_size * self.spec.shape.d_model,
            self.total_steps,
            config.batch_tokens,
            config.micro_batch_size * config.context,
            self.proc.world,
            ", FSDP" if self.sharded else ", DDP" if self.proc.world > 1 else "",
            self.precision,
            self.proc.device,
            self.model.head_chunk_tokens,
        )
        log.info(
            "schedule %s: %d evaluation points, %d optimizer steps in all (%d on the main "
            "trajectory)",
            config.schedule,
            len(self.points),
            trained_steps(self.points),
            self.main_steps,
        )
        epochs = self.order.epochs(self.total_steps * self.sequences)
        if epochs > 1:
            log.warning(
                "%s V=%d reads %d training tokens but the corpus holds %d: %.2f epochs, every "
                "epoch after the first reading the same windows again in a new order",
                self.spec.name,
                self.data.vocab_size,
                self.total_steps * config.batch_tokens,
                len(self.data.train),
                epochs,
            )

    # --- outputs -----------------------------------------------------------------------------

    def summary(self, run_name: str) -> dict[str, Any]:
        """run.json: what was trained, on how much data, and how it ended."""
        spec, config, data = self.spec, self.config, self.data
        wsd = config.schedule == "wsd"
        return {
            "run_id": run_name,
            "model": spec.name,
            "vocab_size": data.vocab_size,
            **asdict(spec.shape),
            "context": config.context,
            "non_vocab_params": self.non_vocab,
            "vocab_params": accounting.vocab_params(data.vocab_size, spec.shape.d_model),
            "total_params": sum(p.numel() for p in self.model.parameters()),
            "train_tokens": self.total_steps * config.batch_tokens,
            "steps": self.total_steps,
            "schedule": config.schedule,
            "cooldown_fraction": config.cooldown_fraction if wsd else None,
            "cooldown_shape": config.cooldown_shape if wsd else None,
            "trained_tokens": trained_steps(self.points) * config.batch_tokens,
            "corpus_tokens": len(data.train),
            "epochs": self.order.epochs(self.total_steps * self.sequences),
            "seed": config.seed,
            "diverged": self.state.diverged_at is not None,
            "diverged_at_step": self.state.diverged_at,
            "eval_tokens": int(len(data.validation) - 1),
            "eval_characters": data.stats["splits"]["validation"]["characters"],
            "precision": self.precision,
            "loss_head": config.loss_head,
            "processes": self.proc.world,
            "parallel": "fsdp" if self.sharded else "ddp" if self.proc.world > 1 else "none",
        }

    def write_outputs(self, out_dir: Path) -> dict[str, Any]:
        """The run's directory, written atomically by rank 0; returns run.json's content.
        model.pt holds the whole model's weights, under FSDP too (gathered on rank 0)."""
        run = self.summary(out_dir.name)
        if self.sharded:
            weights = sharded.full_weights(self.model)
        else:
            weights = {k: v.cpu() for k, v in self.model.state_dict().items()}
        if self.proc.main:
            with atomic_dir(out_dir) as tmp:
                records = pd.DataFrame(self.state.records, columns=list(EVAL_COLUMNS))
                write_csv(tmp / "evals.csv", records)
                history = pd.DataFrame(self.state.history, columns=list(HISTORY_COLUMNS))
                write_csv(tmp / "history.csv", history)
                write_json(tmp / "run.json", run)
                torch.save(weights, tmp / "model.pt")
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
        trainer = Trainer(spec, data, config, proc, checkpoint_dir, inject_nan_at_step)
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
