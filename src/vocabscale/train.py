"""Stage train: one run = one model shape x one tokenizer, evaluated at fixed checkpoints.

AdamW with linear warmup then cosine decay, gradient accumulation to `batch_tokens` per step,
evaluation of the summed cross-entropy over the whole validation token array at `evals`
checkpoints evenly spaced in tokens. Batches are a pure function of (seed, step), so a run
resumed from its last checkpoint sees exactly the data an uninterrupted run would.

Outputs (one directory per run):
  evals.csv    one row per checkpoint: step, tokens, characters, flops, eval CE sum, eval tokens
  history.csv  training loss and learning rate along the run
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
import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from vocabscale import accounting
from vocabscale.config import ModelSpec
from vocabscale.io import atomic_dir, atomic_path, read_json, read_tokens, write_csv, write_json
from vocabscale.model import Llama, summed_cross_entropy

log = logging.getLogger(__name__)

#: Exit status after SIGTERM: the state is saved, the scheduler should retry the job.
EXIT_PREEMPTED = 75


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
    device: str
    precision: str
    compile: bool
    threads: int
    checkpoint_every: int
    throughput_tokens_per_gpu_second: float = 1e5

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
    tokens: np.ndarray, seed: int, step: int, sequences: int, context: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`sequences` random windows of context + 1 tokens; a pure function of (seed, step)."""
    rng = np.random.default_rng([seed, step])
    starts = rng.integers(0, len(tokens) - context - 1, size=sequences)
    windows = np.stack([tokens[s : s + context + 1] for s in starts]).astype(np.int64)
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
) -> tuple[float, int]:
    """Summed cross-entropy (nats) over every target of `tokens`, and the number of targets."""
    model.eval()
    windows = eval_windows(len(tokens), context)
    total, count = 0.0, 0
    by_length: dict[int, list[int]] = {}
    for start, length in windows:
        by_length.setdefault(length, []).append(start)
    for length, starts in sorted(by_length.items()):
        for first in range(0, len(starts), batch_size):
            chunk = starts[first : first + batch_size]
            batch = torch.from_numpy(
                np.stack([tokens[s : s + length] for s in chunk]).astype(np.int64)
            ).to(device)
            with autocast:
                hidden = model(batch[:, :-1])
            loss = summed_cross_entropy(
                hidden, model.output.weight, batch[:, 1:], chunk_tokens=chunk_tokens
            )
            total += float(loss)
            count += batch[:, 1:].numel()
    model.train()
    return total, count


def resolve_device(config: TrainConfig) -> torch.device:
    if config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("train.device is 'cuda' but torch sees no CUDA device")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def autocast_for(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (the default there), full fp32 on CPU unless bf16 is asked for."""
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if use_bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def build_optimizer(model: Llama, config: TrainConfig, device: torch.device):
    """AdamW; weight decay on matrices only (not on norm gains)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        groups, lr=config.lr, betas=(config.beta1, config.beta2), fused=device.type == "cuda"
    )


def fingerprint(spec: ModelSpec, vocab_size: int, config: TrainConfig, data: dict) -> str:
    """What a checkpoint must match to be resumed (anything else means: start afresh)."""
    relevant = {
        "shape": asdict(spec.shape),
        "train_tokens": spec.train_tokens,
        "vocab_size": vocab_size,
        "config": {k: v for k, v in asdict(config).items() if k not in ("threads", "device")},
        "train_tokens_in_corpus": data["splits"]["train"]["tokens"],
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def save_state(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


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
    """Train (or resume) one run and write its outputs; returns run.json's content."""
    tokens_dir, checkpoint_dir = Path(tokens_dir), Path(checkpoint_dir)
    data = read_json(tokens_dir / "stats.json")
    vocab_size = int(data["vocab_size"])
    train_tokens = read_tokens(tokens_dir / "train.bin", vocab_size)
    val_tokens = np.asarray(read_tokens(tokens_dir / "validation.bin", vocab_size))
    if len(train_tokens) <= config.context + 1:
        raise ValueError(
            f"{tokens_dir}/train.bin has {len(train_tokens)} tokens, fewer than "
            f"train.context + 2 = {config.context + 2}"
        )
    characters_per_token = data["splits"]["train"]["characters"] / data["splits"]["train"]["tokens"]

    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config)
    autocast = autocast_for(device, config.precision)
    torch.manual_seed(config.seed)
    model = Llama(spec.shape, vocab_size, config.context).to(device)
    non_vocab = model.non_vocab_parameters()
    if non_vocab != spec.shape.non_vocab_params:
        raise AssertionError(f"Nnv {non_vocab} != closed form {spec.shape.non_vocab_params}")
    optimizer = build_optimizer(model, config, device)
    forward = torch.compile(model) if config.compile else model

    sequences = config.batch_tokens // config.context
    total_steps = spec.train_tokens // config.batch_tokens
    checkpoints = eval_steps(total_steps, config.evals)
    d_model = spec.shape.d_model
    run_fingerprint = fingerprint(spec, vocab_size, config, data)

    step, records, history, diverged_at = 0, [], [], None
    state_path = checkpoint_dir / "state.pt"
    if state_path.exists():
        state = torch.load(state_path, map_location=device, weights_only=False)
        if state["fingerprint"] == run_fingerprint:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["torch_rng"])
            step, records, history = state["step"], state["records"], state["history"]
            log.info("resuming %s from step %d of %d", out_dir, step, total_steps)
        else:
            log.warning("%s belongs to other settings; starting from step 0", state_path)

    def checkpoint() -> None:
        save_state(
            state_path,
            {
                "fingerprint": run_fingerprint,
                "step": step,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "records": records,
                "history": history,
            },
        )

    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    log_every = max(1, total_steps // 100)
    progress = tqdm(
        total=total_steps,
        initial=step,
        desc=f"train {Path(out_dir).name}",
        unit="step",
        mininterval=2,
    )
    started, tokens_at_start = time.perf_counter(), step * config.batch_tokens
    with _SigtermFlag() as sigterm:
        while step < total_steps and diverged_at is None:
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, total_steps, config)
            inputs, targets = sample_batch(
                train_tokens, config.seed, step, sequences, config.context
            )
            step_loss = 0.0
            for first in range(0, sequences, config.micro_batch_size):
                x = inputs[first : first + config.micro_batch_size].to(device, non_blocking=True)
                y = targets[first : first + config.micro_batch_size].to(device, non_blocking=True)
                with autocast:
                    hidden = forward(x)
                loss = summed_cross_entropy(
                    hidden, model.output.weight, y, chunk_tokens=config.head_chunk_tokens
                ) / (sequences * config.context)
                loss.backward()
                step_loss += float(loss.detach())
            if inject_nan_at_step is not None and step == inject_nan_at_step:
                step_loss = float("nan")
            if not math.isfinite(step_loss):
                diverged_at = step
                log.error("training loss is %s at step %d: the run diverged", step_loss, step)
                break
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            progress.update(1)
            if step % log_every == 0 or step == total_steps:
                history.append(
                    {
                        "step": step,
                        "tokens": step * config.batch_tokens,
                        "lr": optimizer.param_groups[0]["lr"],
                        "train_loss": step_loss,
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
                    config.head_chunk_tokens,
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
                        "flops_with_attention": tokens_seen
                        * accounting.flops_per_token_with_attention(
                            non_vocab, vocab_size, d_model, spec.shape.n_layer, config.context
                        ),
                        "eval_ce_sum": ce_sum,
                        "eval_tokens": count,
                    }
                )
                elapsed = time.perf_counter() - started
                log.info(
                    "step %d/%d: eval loss %.4f, train loss %.4f, %.0f tokens/s",
                    step,
                    total_steps,
                    ce_sum / count,
                    step_loss,
                    (tokens_seen - tokens_at_start) / max(elapsed, 1e-9),
                )
                checkpoint()
            elif config.checkpoint_every and step % config.checkpoint_every == 0:
                checkpoint()
            if sigterm.raised:
                checkpoint()
                progress.close()
                raise Preempted(f"SIGTERM at step {step}: state saved to {state_path}")
    progress.close()

    run = {
        "run_id": Path(out_dir).name,
        "model": spec.name,
        "vocab_size": vocab_size,
        **asdict(spec.shape),
        "context": config.context,
        "non_vocab_params": non_vocab,
        "vocab_params": accounting.vocab_params(vocab_size, d_model),
        "train_tokens": total_steps * config.batch_tokens,
        "steps": total_steps,
        "seed": config.seed,
        "diverged": diverged_at is not None,
        "diverged_at_step": diverged_at,
        "eval_tokens": int(len(val_tokens) - 1),
        "eval_characters": data["splits"]["validation"]["characters"],
    }
    with atomic_dir(out_dir) as tmp:
        write_csv(tmp / "evals.csv", pd.DataFrame(records, columns=list(EVAL_COLUMNS)))
        write_csv(
            tmp / "history.csv",
            pd.DataFrame(history, columns=["step", "tokens", "lr", "train_loss"]),
        )
        write_json(tmp / "run.json", run)
        torch.save({k: v.cpu() for k, v in model.state_dict().items()}, tmp / "model.pt")
    return run


EVAL_COLUMNS = (
    "step",
    "tokens",
    "characters",
    "flops",
    "flops_with_attention",
    "eval_ce_sum",
    "eval_tokens",
)
