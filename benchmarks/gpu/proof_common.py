"""What the parts of the GPU proof share: the settings of a full or a smoke run, the record
each part writes as it goes (so that a part killed at its time cap still leaves what it
measured), and the token streams the short runs and the timed steps read."""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vocabscale.accounting import PAPER_SHAPES, ModelShape

REPO = Path(__file__).resolve().parents[2]
PAPER_PRESET = REPO / "workflow" / "presets" / "paper.yaml"
EMBEDDED_PARAMS = REPO / "params.yaml"

#: The parts, in the order they run, with the seconds each may take on the GPU (and in the
#: smoke run, where they only stop a part that hangs: on a CPU shared with other jobs a part
#: takes several times its usual few seconds). A part past its cap is killed and recorded as
#: timed out; the others still run.
PART_CAPS = {"heads": (60, 60), "resume": (90, 90), "steps": (200, 90)}
#: The whole proof on the GPU: the parts' caps and the time to start them.
BUDGET_SECONDS = 360

#: Smoke stand-ins for the paper's shapes: the same code paths, in seconds on two cores.
SMOKE_SHAPES = {
    "33M": ModelShape(2, 2, 32, 64),
    "302M": ModelShape(2, 2, 48, 96),
    "1.13B": ModelShape(2, 4, 64, 128),
}

#: What --smoke changes: tiny sizes, the same code paths.
SMOKE: dict[str, Any] = {
    "smoke": True,
    "shapes": SMOKE_SHAPES,
    "vocab_sizes": (256, 1024),
    "context": 32,
    "accumulation": 2,
    "warmup_steps": 1,
    "timed_steps": 2,
    "head_vocab_sizes": (1024, 8192),
    "head_width": 64,
    "head_tokens": 256,
    "head_chunk_logits": 2**16,
    "resume_model": "xs",
    "resume_train_tokens": 1024 * 24,
    "resume_validation_tokens": 4000,
    "resume_train": {
        "context": 32,
        "batch_tokens": 1024,
        "micro_batch_size": 32,
        "warmup_tokens": 8192,
    },
    # Inductor's C++ code generation takes ~30 s a shape on two CPU cores: the smoke traces
    # with dynamo and AOTAutograd and runs the graphs eagerly
    "compile_backend": "aot_eager",
}


@dataclass(frozen=True)
class Settings:
    """What a run of the proof measures: the paper's sizes on a GPU, tiny ones with --smoke."""

    smoke: bool
    shapes: dict[str, ModelShape]
    vocab_sizes: tuple[int, ...]  # of the timed training steps
    context: int
    accumulation: int  # micro-batches per timed optimizer step
    warmup_steps: int
    timed_steps: int
    head_vocab_sizes: tuple[int, ...]
    head_width: int
    head_tokens: int
    head_chunk_logits: int | None  # None: train.head_chunk_logits
    resume_model: str  # a model of params.yaml (the embedded default)
    resume_vocab_size: int
    resume_train_tokens: int
    resume_validation_tokens: int
    resume_train: dict[str, Any]  # changes to params.yaml's train section
    compile_backend: str | None = None  # None: Inductor, torch.compile's default
    caps: dict[str, int] = field(default_factory=dict)

    @classmethod
    def for_run(cls, smoke: bool) -> Settings:
        caps = {part: smoke_cap if smoke else cap for part, (cap, smoke_cap) in PART_CAPS.items()}
        full = cls(
            smoke=False,
            shapes={name: PAPER_SHAPES[name][0] for name in ("33M", "302M", "1.13B")},
            vocab_sizes=(32768, 96256),
            context=2048,
            accumulation=4,
            warmup_steps=2,
            timed_steps=5,
            head_vocab_sizes=(32768, 256000),
            head_width=2048,  # the 1.13B model's d
            head_tokens=8192,  # one micro-batch of the paper preset: 4 x 2048
            head_chunk_logits=None,
            resume_model="m",
            resume_vocab_size=640,
            resume_train_tokens=440000,
            resume_validation_tokens=20000,
            resume_train={},
            caps=caps,
        )
        return dataclasses.replace(full, **SMOKE) if smoke else full

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Settings:
        shapes = {name: ModelShape(**shape) for name, shape in data["shapes"].items()}
        tuples = ("vocab_sizes", "head_vocab_sizes")
        return cls(**{**data, "shapes": shapes, **{key: tuple(data[key]) for key in tuples}})


class PartLog:
    """A part's results, rewritten (atomically) after every case: the orchestrator reads
    them whether the part finished, broke or was killed at its cap."""

    def __init__(self, path: Path, cases: list[dict[str, Any]], deadline: float) -> None:
        self.path, self.deadline = path, deadline  # deadline: time.time() when it is killed
        self.started = time.time()
        self.data: dict[str, Any] = {"cases": cases}
        self.save()

    def time_left(self) -> float:
        return self.deadline - time.time()

    def cases_in_time(self, margin: float) -> Iterator[dict[str, Any]]:
        """The planned cases, while at least `margin` seconds of the cap are left; the rest
        are recorded as skipped."""
        for case in self.data["cases"]:
            if self.time_left() < margin:
                case["status"] = "skipped: the part's time cap was reached"
                continue
            yield case

    def attempt(self, case: dict[str, Any], device: torch.device, action: Callable) -> None:
        """Run one case's `action`, recording how it ended: ok (unless the action recorded
        a reason to skip), out of memory, or the error. The GPU memory it held is freed."""
        case["status"] = "running"
        self.save()
        started = time.time()
        try:
            action()
            if case["status"] == "running":
                case["status"] = "ok"
        except torch.cuda.OutOfMemoryError:
            case["status"] = "out of memory"
        except Exception as error:  # recorded; the next case still runs
            case["status"] = f"error: {type(error).__name__}: {error}"[:500]
        if device.type == "cuda":  # give the next case the whole GPU (gc: a CPU needs none)
            gc.collect()
            torch.cuda.empty_cache()
        case["case_s"] = round(time.time() - started, 2)
        self.save()

    def save(self) -> None:
        self.data["wall_s"] = round(time.time() - self.started, 2)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        os.replace(tmp, self.path)


def read_part(path: Path) -> dict[str, Any] | None:
    """What a part wrote, or None when it wrote nothing."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def phrase_tokens(vocab_size: int, count: int, seed: int = 0) -> np.ndarray:
    """`count` token ids that a model can learn from: a random sequence (by `seed`) of 500
    random "phrases" of 2 to 8 tokens, the same phrases for every seed (within a phrase every
    next token is determined)."""
    table = np.random.default_rng(vocab_size)
    phrases = [table.integers(0, vocab_size, table.integers(2, 9)) for _ in range(500)]
    picks = np.random.default_rng(seed).integers(0, len(phrases), count // 2 + 1)
    return np.concatenate([phrases[i] for i in picks])[:count]


def run_logs(folder: Path, lines: int = 80) -> str:
    """The end of each run's log under `folder`, and whatever else it wrote to stderr (a
    traceback), for resume.log."""
    parts = []
    for log in sorted(folder.glob("*/train.log")):
        logged = log.read_text(errors="replace").splitlines()
        stderr = log.with_name("stderr.txt")
        other = stderr.read_text(errors="replace").splitlines() if stderr.exists() else []
        seen = set(logged)
        other = [line for line in other if line not in seen]
        text = "\n".join(logged[-lines:] + other[-lines:])
        parts.append(f"==> {log.parent.name}/{log.name} (and stderr) <==\n{text}")
    return "\n\n".join(parts) + "\n" if parts else "(no run logs)\n"
