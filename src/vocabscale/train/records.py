"""What a run records and writes: its progress (`RunState`, saved with every checkpoint), one
row per evaluation point, the training curve, run.json, and the run directory that holds
them, written at the end, atomically."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from vocabscale import accounting
from vocabscale.io import atomic_dir, write_csv, write_json
from vocabscale.train.plan import RunPlan
from vocabscale.train.schedule import EvalPoint, trained_steps

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


def eval_record(plan: RunPlan, point: EvalPoint, ce_sum: float, count: int) -> dict[str, Any]:
    """One row of evals.csv. The point's tokens, characters and FLOPs are those of the data
    it has been trained on, its cooldown branch's included."""
    batch_tokens, data = plan.config.batch_tokens, plan.data
    tokens = point.steps * batch_tokens
    return {
        "step": point.steps,
        "tokens": tokens,
        "characters": tokens * data.characters_per_token,
        "flops": accounting.flops(plan.non_vocab, data.vocab_size, plan.spec.shape.d_model, tokens),
        "flops_with_attention": tokens * plan.flops_per_token,
        "eval_ce_sum": ce_sum,
        "eval_tokens": count,
        "schedule": plan.config.schedule,
        "cooldown_tokens": point.cooldown_steps * batch_tokens,
        "epochs": plan.epochs(point.steps),
    }


def history_row(
    step: int, batch_tokens: int, lr: float, loss: float, grad_norm: float
) -> dict[str, Any]:
    """One row of history.csv: the main trajectory after `step` steps."""
    return {
        "step": step,
        "tokens": step * batch_tokens,
        "lr": lr,
        "train_loss": loss,
        "grad_norm": grad_norm,
    }


def summary(plan: RunPlan, state: RunState, run_name: str, total_params: int) -> dict[str, Any]:
    """run.json: what was trained, on how much data, and how it ended."""
    spec, config, data = plan.spec, plan.config, plan.data
    wsd = config.schedule == "wsd"
    return {
        "run_id": run_name,
        "model": spec.name,
        "vocab_size": data.vocab_size,
        **asdict(spec.shape),
        "context": config.context,
        "non_vocab_params": plan.non_vocab,
        "vocab_params": accounting.vocab_params(data.vocab_size, spec.shape.d_model),
        "total_params": total_params,
        "train_tokens": plan.total_steps * config.batch_tokens,
        "steps": plan.total_steps,
        "schedule": config.schedule,
        "cooldown_fraction": config.cooldown_fraction if wsd else None,
        "cooldown_shape": config.cooldown_shape if wsd else None,
        "trained_tokens": trained_steps(plan.points) * config.batch_tokens,
        "corpus_tokens": len(data.train),
        "epochs": plan.epochs(plan.total_steps),
        "seed": config.seed,
        "diverged": state.diverged_at is not None,
        "diverged_at_step": state.diverged_at,
        "eval_tokens": int(len(data.validation) - 1),
        "eval_characters": data.stats["splits"]["validation"]["characters"],
        "precision": plan.precision,
        "loss_head": config.loss_head,
        "processes": plan.proc.world,
        "parallel": plan.parallel,
    }


def write_run_dir(
    out_dir: Path, state: RunState, run: dict[str, Any], weights: dict[str, torch.Tensor]
) -> None:
    """The run directory, all of it or nothing: evals.csv, history.csv, run.json (`run`) and
    model.pt (`weights`)."""
    with atomic_dir(out_dir) as tmp:
        records = pd.DataFrame(state.records, columns=list(EVAL_COLUMNS))
        write_csv(tmp / "evals.csv", records)
        history = pd.DataFrame(state.history, columns=list(HISTORY_COLUMNS))
        write_csv(tmp / "history.csv", history)
        write_json(tmp / "run.json", run)
        torch.save(weights, tmp / "model.pt")
