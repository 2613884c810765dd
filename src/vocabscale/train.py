"""Stage train: one run = one model shape x one tokenizer, evaluated at fixed checkpoints.

AdamW with linear warmup then cosine decay, gradient accumulation to `batch_tokens` per step,
evaluation of the summed cross-entropy over the whole validation token array at `evals`
checkpoints evenly spaced in tokens. Batches are a pure function of (seed, step), so a run
resumed from its last checkpoint sees exactly the data an uninterrupted run would, and so does
each process of a multi-GPU run (it takes its rows of the same global batch).

On CUDA: bf16 autocast, flash attention through `scaled_dot_product_attention`, fused AdamW,
optional `torch.compile` of each block, and a loss head that never holds more than
`head_chunk_logits` logits (`model.summed_cross_entropy`). Several GPUs: DDP under torchrun
(`vocabscale.distributed`).

Safe to kill: the state (model, optimizer, schedule position, RNG states, records so far) is
saved atomically at every evaluation and every `checkpoint_every` steps; SIGKILL loses at most
the steps since; SIGTERM finishes the current step, saves, and exits with EXIT_PREEMPTED.

Outputs (one directory per run, written at the end, atomically):
  evals.csv    one row per checkpoint: step, tokens, characters, flops, eval CE sum, eval tokens
  history.csv  training loss, gradient norm and learning rate along the run
  run.json     shape, exact Nnv and Nv, budgets, whether the run diverged
  model.pt     final weights
Resume state lives in a separate checkpoint directory that survives reruns.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import pickle
import random
import shutil
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from vocabscale import accounting, distributed
from vocabscale.config import ModelSpec
from vocabscale.distributed import Process
from vocabscale.io import atomic_dir, atomic_path, read_json, read_tokens, write_csv, write_json
from vocabscale.model import Llama, head_chunk_rows

log = logging.getLogger(__name__)

#: Exit status after SIGTERM: the state is saved, the scheduler should retry the job.
EXIT_PREEMPTED = 75

EVAL_COLUMNS = (
    "step",
    "tokens",
    "characters",
    "flops",
    "flops_with_attention",
    "eval_ce_sum",
    "eval_tokens",
)
HISTORY_COLUMNS = ("step", "tokens", "lr", "train_loss", "grad_norm")

#: Settings that change neither the data nor the arithmetic: a checkpoint written under other
#: values of these is resumed.
_NOT_FINGERPRINTED = ("threads", "device", "compile", "checkpoint_every")

#: The modules that compute a run (the train stage's code in dvc.yaml): a checkpoint written by
#: other code is not resumed, so a fix to the training code trains again instead of reusing
#: state the old code wrote.
TRAINING_CODE = ("train.py", "model.py", "distributed.py", "accounting.py")


def code_digest(package: Path = Path(__file__).parent) -> str:
    """sha256 over the source of TRAINING_CODE in `package`."""
    digest = hashlib.sha256()
    for name in TRAINING_CODE:
        digest.update((package / name).read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class TrainConfig:
    """The `train` section of params.yaml (defaults filled in by `vocabscale.config`)."""

    seed: int
    context: int
    batch_tokens: int
    micro_batch_size: int
    lr: float
    min_lr_ratio: float
    warmup_fraction: float
    weight_decay: float
    beta1: float
    beta2: float
    grad_clip: float
    evals: int
    eval_batch_size: int
    head_chunk_tokens: int
    head_chunk_logits: int
    device: str
    precision: str
    compile: bool
    threads: int
    checkpoint_every: int

    @classmethod
    def from_params(cls, section: dict[str, Any]) -> TrainConfig:
        return cls(**section)


class Preempted(RuntimeError):
    """SIGTERM arrived; the state was checkpointed."""


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


def sample_batch(
    tokens: np.ndarray,
    seed: int,
    step: int,
    sequences: int,
    context: int,
    rank: int = 0,
    world: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Process `rank`'s rows of the global batch of `step`: `sequences` random windows of
    context + 1 tokens, a pure function of (seed, step); rank r of `world` takes the r-th of
    `world` equal contiguous slices."""
    rng = np.random.default_rng([seed, step])
    starts = rng.integers(0, len(tokens) - context - 1, size=sequences)
    share = sequences // world
    mine = starts[rank * share : (rank + 1) * share]
    windows = np.stack([tokens[s : s + context + 1] for s in mine]).astype(np.int64)
    batch = torch.from_numpy(windows)
    return batch[:, :-1], batch[:, 1:]


def eval_windows(n_tokens: int, context: int) -> list[tuple[int, int]]:
    """Windows (start, length) of at most context + 1 tokens overlapping by one token, so that
    every token after the first is a target exactly once."""
    return [
        (start, min(context + 1, n_tokens - start)) for start in range(0, n_tokens - 1, context)
    ]


@torch.no_grad()
def evaluate(
    model: Llama,
    tokens: np.ndarray,
    context: int,
    batch_size: int,
    device: torch.device,
    autocast: contextlib.AbstractContextManager,
    chunk_tokens: int,
    proc: Process | None = None,
) -> tuple[float, int]:
    """Summed cross-entropy (nats) over every target of `tokens`, and the number of targets.

    The batches are the same whatever the number of processes; batch i is computed by process
    i mod world and the per-batch sums are added in batch order, so several processes give
    exactly the numbers one would.
    """
    proc = proc or Process(0, 1, device)
    model.eval()
    by_length: dict[int, list[int]] = {}
    for start, length in eval_windows(len(tokens), context):
        by_length.setdefault(length, []).append(start)
    batches = [
        (length, starts[first : first + batch_size])
        for length, starts in sorted(by_length.items())
        for first in range(0, len(starts), batch_size)
    ]
    sums = torch.zeros(len(batches), dtype=torch.float64, device=device)
    for index in range(proc.rank, len(batches), proc.world):
        length, starts = batches[index]
        batch = torch.from_numpy(
            np.stack([tokens[s : s + length] for s in starts]).astype(np.int64)
        ).to(device)
        with autocast:
            sums[index] = model(batch[:, :-1], batch[:, 1:], chunk_tokens=chunk_tokens).double()
    per_batch = distributed.all_sum(sums, proc).tolist()
    model.train()
    return sum(per_batch), sum(len(starts) * (length - 1) for length, starts in batches)


def autocast_for(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (the default there), full fp32 on CPU unless bf16 is asked for."""
    if resolved_precision(device, precision) == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def resolved_precision(device: torch.device, precision: str) -> str:
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


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


def build_model(
    spec: ModelSpec, vocab_size: int, config: TrainConfig, device: torch.device
) -> Llama:
    """The run's model, seeded by `config.seed`; each block compiled when `config.compile`
    (regional compilation: one graph reused by every block, the chunked head left eager)."""
    torch.manual_seed(config.seed)
    rows = head_chunk_rows(vocab_size, config.head_chunk_tokens, config.head_chunk_logits)
    model = Llama(spec.shape, vocab_size, config.context, head_chunk_tokens=rows).to(device)
    if config.compile:
        for block in model.blocks:
            block.compile()
    return model


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
    Under DDP the gradients are all-reduced once, after the last micro-batch."""
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


def fingerprint(spec: ModelSpec, vocab_size: int, config: TrainConfig, data: dict) -> str:
    """What a checkpoint must match to be resumed (anything else means: start afresh). The
    number of processes is not part of it: a run may resume on more or fewer GPUs."""
    relevant = {
        "code": code_digest(),
        "shape": asdict(spec.shape),
        "train_tokens": spec.train_tokens,
        "vocab_size": vocab_size,
        "config": {k: v for k, v in asdict(config).items() if k not in _NOT_FINGERPRINTED},
        "train_tokens_in_corpus": data["splits"]["train"]["tokens"],
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def rng_state(device: torch.device) -> dict[str, Any]:
    """Every random generator's state, in types `torch.load(weights_only=True)` accepts."""
    name, keys, position, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [name, keys.tolist(), position, has_gauss, gauss],
        "python": random.getstate(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), position, has_gauss, gauss))
    random.setstate(state["python"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def save_state(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _read_state(path: Path, mmap: bool) -> dict[str, Any] | None:
    """The saved state, or None (with a warning) when it cannot be read. On CUDA the file is
    memory-mapped so that the workers of a node share one copy in host memory; on CPU it is
    read outright, or the optimizer state would alias the mapping."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as error:
        log.warning("%s cannot be read (%s); starting from step 0", path, error)
        return None


def _remove_stale_temporaries(out_dir: Path, state_path: Path) -> None:
    """A SIGKILL during an atomic write leaves its temporary behind; clear this run's."""
    for stale in state_path.parent.glob(f".{state_path.name}.*.tmp"):
        stale.unlink(missing_ok=True)
    for stale in out_dir.parent.glob(f".{out_dir.name}.*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)


class _SigtermFlag:
    """Turns SIGTERM into a flag the loop checks between steps."""

    def __init__(self) -> None:
        self.raised = False

    def __enter__(self) -> _SigtermFlag:
        self.previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.raised = True

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGTERM, self.previous)


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
    tokens_dir, out_dir, checkpoint_dir = Path(tokens_dir), Path(out_dir), Path(checkpoint_dir)
    data = read_json(tokens_dir / "stats.json")
    vocab_size = int(data["vocab_size"])
    train_tokens = read_tokens(tokens_dir / "train.bin", vocab_size)
    val_tokens = np.asarray(read_tokens(tokens_dir / "validation.bin", vocab_size))
    if len(train_tokens) <= config.context + 1:
        raise ValueError(
            f"{tokens_dir}/train.bin has {len(train_tokens)} tokens, fewer than "
            f"train.context + 2 = {config.context + 2}"
        )
    if config.threads:
        torch.set_num_threads(config.threads)
    proc = distributed.setup(config.device)
    try:
        return _train(
            spec,
            data,
            train_tokens,
            val_tokens,
            config,
            out_dir,
            checkpoint_dir,
            proc,
            inject_nan_at_step,
        )
    finally:
        distributed.teardown()


def _train(
    spec: ModelSpec,
    data: dict[str, Any],
    train_tokens: np.ndarray,
    val_tokens: np.ndarray,
    config: TrainConfig,
    out_dir: Path,
    checkpoint_dir: Path,
    proc: Process,
    inject_nan_at_step: int | None,
) -> dict[str, Any]:
    device, vocab_size, d_model = proc.device, int(data["vocab_size"]), spec.shape.d_model
    sequences = config.batch_tokens // config.context
    if sequences % proc.world:
        raise ValueError(
            f"train.batch_tokens / train.context = {sequences} sequences per step do not split "
            f"evenly over {proc.world} processes (models.{spec.name}.gpus)"
        )
    total_steps = spec.train_tokens // config.batch_tokens
    checkpoints = eval_steps(total_steps, config.evals)
    characters_per_token = data["splits"]["train"]["characters"] / data["splits"]["train"]["tokens"]
    precision = resolved_precision(device, config.precision)
    autocast = autocast_for(device, config.precision)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # what fp32 matmuls remain
        torch.backends.cudnn.allow_tf32 = True

    model = build_model(spec, vocab_size, config, device)
    non_vocab = model.non_vocab_parameters()
    if non_vocab != spec.shape.non_vocab_params:
        raise AssertionError(f"Nnv {non_vocab} != closed form {spec.shape.non_vocab_params}")
    optimizer = build_optimizer(model, config, device)
    run_fingerprint = fingerprint(spec, vocab_size, config, data)
    flops_per_token = accounting.flops_per_token_with_attention(
        non_vocab, vocab_size, d_model, spec.shape.n_layer, config.context
    )

    step, records, history, diverged_at = 0, [], [], None
    state_path = checkpoint_dir / "state.pt"
    if proc.main:
        _remove_stale_temporaries(out_dir, state_path)
    state = _read_state(state_path, mmap=device.type == "cuda") if state_path.exists() else None
    if state is not None:
        if state["fingerprint"] == run_fingerprint:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            set_rng_state(state["rng"], device)
            step, records, history = state["step"], state["records"], state["history"]
            log.info("resuming %s from step %d of %d", out_dir, step, total_steps)
        else:
            log.warning("%s belongs to other settings; starting from step 0", state_path)
        del state
    # DDP broadcasts rank 0's weights and averages gradients (in place in its communication
    # buckets); `model` stays the plain module used for evaluation and checkpoints. The only
    # buffers are the RoPE tables, the same everywhere: no need to broadcast them every step.
    train_model = model
    if proc.world > 1:
        train_model = DistributedDataParallel(
            model, broadcast_buffers=False, gradient_as_bucket_view=True
        )

    def checkpoint() -> None:
        if not proc.main:
            return
        save_state(
            state_path,
            {
                "fingerprint": run_fingerprint,
                "step": step,  # also the data position: batches are a function of the step
                "total_steps": total_steps,
                "schedule": {"step": step, "lr": learning_rate(step, total_steps, config)},
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "rng": rng_state(device),
                "records": records,
                "history": history,
                "processes": proc.world,
            },
        )

    if proc.main:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
    log.info(
        "%s: Nnv %d, Nv %d, %d steps of %d tokens (%d per micro-batch x %d processes), "
        "%s on %s, loss head %d tokens per chunk",
        out_dir.name,
        non_vocab,
        vocab_size * d_model,
        total_steps,
        config.batch_tokens,
        config.micro_batch_size * config.context,
        proc.world,
        precision,
        device,
        model.head_chunk_tokens,
    )
    log_every = max(1, total_steps // 100)
    progress = tqdm(
        total=total_steps,
        initial=step,
        desc=f"train {out_dir.name}",
        unit="step",
        mininterval=2,
        disable=not proc.main,
    )
    started, tokens_at_start = time.perf_counter(), step * config.batch_tokens
    with _SigtermFlag() as sigterm:
        while step < total_steps:
            lr = learning_rate(step, total_steps, config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            inputs, targets = sample_batch(
                train_tokens, config.seed, step, sequences, config.context, proc.rank, proc.world
            )
            if device.type == "cuda":
                inputs, targets = inputs.pin_memory(), targets.pin_memory()
            if step == inject_nan_at_step:
                with torch.no_grad():
                    model.output.weight[0, 0] = float("nan")
            # DDP averages gradients over processes: scale so they sum to d(mean CE).
            local_ce = accumulate_gradients(
                train_model,
                inputs,
                targets,
                config.micro_batch_size,
                autocast,
                proc.world / config.batch_tokens,
            )
            norm = torch.nn.utils.clip_grad_norm_(
                model.parameters(), config.grad_clip if config.grad_clip > 0 else math.inf
            )
            summed = distributed.all_sum(
                torch.stack([local_ce, torch.tensor(float(sigterm.raised), device=device)]), proc
            )
            ce_sum, stop, grad_norm = torch.cat([summed, norm.reshape(1).float()]).tolist()
            step_loss = ce_sum / config.batch_tokens
            if not (math.isfinite(step_loss) and math.isfinite(grad_norm)):
                diverged_at = step
                log.error(
                    "step %d: training loss %s, gradient norm %s: the run diverged",
                    step,
                    step_loss,
                    grad_norm,
                )
                break
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            progress.update(1)
            if step % log_every == 0 or step == total_steps:
                history.append(
                    {
                        "step": step,
                        "tokens": step * config.batch_tokens,
                        "lr": lr,
                        "train_loss": step_loss,
                        "grad_norm": grad_norm,
                    }
                )
            if step in checkpoints:
                ce_sum, count = evaluate(
                    model,
                    val_tokens,
                    config.context,
                    config.eval_batch_size,
                    device,
                    autocast,
                    model.head_chunk_tokens,
                    proc,
                )
                if not math.isfinite(ce_sum):
                    diverged_at = step
                    log.error("evaluation loss is %s at step %d: the run diverged", ce_sum, step)
                    break
                tokens_seen = step * config.batch_tokens
                records.append(
                    {
                        "step": step,
                        "tokens": tokens_seen,
                        "characters": tokens_seen * characters_per_token,
                        "flops": accounting.flops(non_vocab, vocab_size, d_model, tokens_seen),
                        "flops_with_attention": tokens_seen * flops_per_token,
                        "eval_ce_sum": ce_sum,
                        "eval_tokens": count,
                    }
                )
                elapsed = max(time.perf_counter() - started, 1e-9)
                tokens_per_second = (tokens_seen - tokens_at_start) / elapsed
                log.info(
                    "step %d/%d: eval loss %.4f, train loss %.4f, %.0f tokens/s, %.3g FLOP/s",
                    step,
                    total_steps,
                    ce_sum / count,
                    step_loss,
                    tokens_per_second,
                    tokens_per_second * flops_per_token,
                )
                checkpoint()
            elif config.checkpoint_every and step % config.checkpoint_every == 0:
                checkpoint()
            if stop:
                checkpoint()
                progress.close()
                raise Preempted(f"SIGTERM at step {step}: state saved to {state_path}")
    progress.close()

    run = {
        "run_id": out_dir.name,
        "model": spec.name,
        "vocab_size": vocab_size,
        **asdict(spec.shape),
        "context": config.context,
        "non_vocab_params": non_vocab,
        "vocab_params": accounting.vocab_params(vocab_size, d_model),
        "total_params": sum(p.numel() for p in model.parameters()),
        "train_tokens": total_steps * config.batch_tokens,
        "steps": total_steps,
        "seed": config.seed,
        "diverged": diverged_at is not None,
        "diverged_at_step": diverged_at,
        "eval_tokens": int(len(val_tokens) - 1),
        "eval_characters": data["splits"]["validation"]["characters"],
        "precision": precision,
        "processes": proc.world,
    }
    if proc.main:
        with atomic_dir(out_dir) as tmp:
            write_csv(tmp / "evals.csv", pd.DataFrame(records, columns=list(EVAL_COLUMNS)))
            write_csv(tmp / "history.csv", pd.DataFrame(history, columns=list(HISTORY_COLUMNS)))
            write_json(tmp / "run.json", run)
            torch.save({k: v.cpu() for k, v in model.state_dict().items()}, tmp / "model.pt")
    return run
