"""Run by tests/test_distributed.py under torchrun, two gloo processes of one DDP run: when the
ranks read the resume state and when rank 0 writes it.

`python -m torch.distributed.run --standalone --nproc-per-node=2 ddp_state_reads.py PARAMS
MODEL TOKENS ROOT` writes `ROOT/rank<r>.json`:

- `order`: a wsd run (`trainer`) in which every read of a state file (and every load of what
  was read) marks itself in `ROOT/marks` while it runs, rank 1's slowly; rank 0's writes (a
  state saved, a branch removed) list any mark they find, and every read lists rank 0's write
  in progress: a rank reading a file that rank 0 replaces.
- `unreadable`, `unseen`: the run resumed again, rank 1 failing to read the state (EIO), or
  not seeing it: what each rank raised.
"""

from __future__ import annotations

import dataclasses
import errno
import gc
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from vocabscale.config import load_params
from vocabscale.sweep import model_specs
from vocabscale.train import checkpointer as checkpointer_module
from vocabscale.train import distributed
from vocabscale.train.checkpointer import Checkpointer
from vocabscale.train.config import TrainConfig
from vocabscale.train.data import RunData
from vocabscale.train.distributed import Process
from vocabscale.train.loop import Trainer
from vocabscale.train.plan import RunPlan


def trainer(params_file: str, model: str, tokens: str, root: Path, proc: Process) -> Trainer:
    """`model` trained for 9 steps with wsd, evaluated after each: the last two points branch
    from the same step, so a branch is read back right after the main trajectory is saved."""
    params = load_params(params_file)
    config = TrainConfig.from_params({**params["train"], "schedule": "wsd", "evals": 9})
    spec = model_specs(params)[model]
    spec = dataclasses.replace(spec, train_tokens=9 * config.batch_tokens)
    plan = RunPlan.make(spec, RunData.load(tokens, config.context), config, proc)
    assert [point.branch_from for point in plan.points][-2:] == [7, 7]
    return Trainer(plan, root / "checkpoint")


def marked(function: Callable, mark: Path, delay: float, check: Callable[[], None]) -> Callable:
    """`function`, made to `check` what the other ranks do, then to hold `mark` while it runs
    (and `delay` seconds more)."""

    def run(*args, **kwargs) -> Any:
        check()
        mark.touch()
        try:
            time.sleep(delay)
            return function(*args, **kwargs)
        finally:
            mark.unlink()

    return run


def watch(marks: Path, rank: int, seen: list[str]) -> None:
    """Mark every read, load and (rank 0's) write of a state; list in `seen` every read that
    meets a write."""
    reading, writing = marks / f"reading-{rank}", marks / "writing"

    def no_write() -> None:
        if writing.exists():
            seen.append(f"rank {rank} reads while rank 0 writes")

    def no_read() -> None:
        seen.extend(f"rank 0 writes while {mark.name}" for mark in marks.glob("reading-*"))

    slow = 0.3 if rank == 1 else 0.0
    checkpointer_module.read_state = marked(checkpointer_module.read_state, reading, slow, no_write)
    Checkpointer.load_training_state = marked(
        Checkpointer.load_training_state, reading, slow, no_write
    )
    if rank == 0:
        save_state = checkpointer_module.save_state
        checkpointer_module.save_state = marked(save_state, writing, 0.1, no_read)
        Checkpointer.remove_branch = marked(Checkpointer.remove_branch, writing, 0.1, no_read)


def resumed_with(trainer: Trainer, failure: OSError | None, out: Path) -> str:
    """What `trainer.resume` raised (or "resumed") when torch.load raises `failure`."""
    load = torch.load

    def failing(*args, **kwargs) -> Any:
        raise failure

    if failure is not None:
        torch.load = failing
    try:
        trainer.resume(out)
        return "resumed"
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    finally:
        torch.load = load


def main(params_file: str, model: str, tokens: str, root: str) -> None:
    root_dir = Path(root)
    torch.set_num_threads(1)
    proc = distributed.setup("cpu")
    marks = root_dir / "marks"
    marks.mkdir(exist_ok=True)
    seen: list[str] = []
    watch(marks, proc.rank, seen)
    run = trainer(params_file, model, tokens, root_dir, proc)
    run.resume(root_dir / "run")
    run.train()
    result: dict[str, Any] = {"order": seen, "points": len(run.state.records)}
    del run
    gc.collect()
    for name, failure in (
        ("unreadable", OSError(errno.EIO, "Input/output error")),
        ("unseen", FileNotFoundError(errno.ENOENT, "No such file or directory")),
    ):
        again = trainer(params_file, model, tokens, root_dir, proc)
        result[name] = resumed_with(again, failure if proc.rank == 1 else None, root_dir / "run")
        del again
        gc.collect()
    (root_dir / f"rank{proc.rank}.json").write_text(json.dumps(result))
    distributed.teardown()


if __name__ == "__main__":
    main(*sys.argv[1:])
