"""A run's resume state as a file: its random generators, its atomic write and read, and the
fingerprint it must match to be resumed (shape, data, settings and training code), so that a
run never continues from the state of other settings or code."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vocabscale.io import atomic_path
from vocabscale.sweep import ModelSpec
from vocabscale.train.config import TrainConfig

#: Settings that change neither the data nor the arithmetic: a checkpoint written under other
#: values of these is resumed.
NOT_FINGERPRINTED = ("threads", "device", "compile", "checkpoint_every")

#: The vocabscale package, whose training code (this package and the parameter accounting)
#: the fingerprint covers.
PACKAGE = Path(__file__).resolve().parents[1]


def code_digest(package: Path = PACKAGE) -> str:
    """sha256 over the source of the training code in `package`: every module of `train/` and
    `accounting.py`. A checkpoint written by other code is not resumed, so a fix to the
    training code trains again instead of reusing state the old code wrote."""
    digest = hashlib.sha256()
    for path in [*sorted((package / "train").glob("*.py")), package / "accounting.py"]:
        digest.update(path.relative_to(package).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def fingerprint(
    spec: ModelSpec, vocab_size: int, config: TrainConfig, data_digest: dict, precision: str
) -> str:
    """What a checkpoint must match to be resumed (anything else means: start afresh): the
    content of the token arrays (their digests), the precision `auto` resolved to on this
    machine, the schedule and every other setting that changes the arithmetic. The number of
    processes is not part of it: a run may resume on more or fewer GPUs."""
    relevant = {
        "code": code_digest(),
        "shape": asdict(spec.shape),
        "train_tokens": spec.train_tokens,
        "vocab_size": vocab_size,
        "config": {k: v for k, v in asdict(config).items() if k not in NOT_FINGERPRINTED},
        "precision": precision,
        "data": data_digest,
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


class UnreadableState(ValueError):
    """A resume state that exists but cannot be read (an I/O error, a permission, a file cut
    short or of another format), for `cause`. The run stops on every process, touching
    nothing: whether the state is lost is for a human to decide. A ValueError, so that the
    command says it in one line and exits 2, never 75 (preempted, run again)."""

    def __init__(self, path: Path, cause: str) -> None:
        self.path, self.cause = path, cause
        super().__init__(
            f"{path} exists but cannot be read ({cause}). Nothing in {path.parent} was removed "
            "or overwritten. If the filesystem is at fault (permissions, a stale or failing "
            "mount), fix it and run this again to resume; to train this run from the start, "
            f"move {path} out of the way (or delete it) and run this again."
        )


def cause_of(error: Exception) -> str:
    """Why a state could not be read, in one line: an OSError as it is; of torch's messages,
    paragraphs of advice that does not apply here (to load with weights_only=False), the
    first sentence or the unpickler's own error."""
    text = str(error)
    if not isinstance(error, OSError):
        text = text.split("WeightsUnpickler error:")[-1].strip().split("\n")[0].split(". ")[0]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def read_state(path: Path, mmap: bool) -> dict[str, Any] | None:
    """The saved state at `path`, or None when there is no file; UnreadableState when there is
    one that cannot be read. On CUDA the file is memory-mapped so that the workers of a node
    share one copy in host memory; on CPU it is read outright, or the optimizer state would
    alias the mapping."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except FileNotFoundError:
        return None
    except Exception as error:  # OSError, RuntimeError, EOFError, UnpicklingError, ...
        raise UnreadableState(path, cause_of(error)) from error
    if not isinstance(state, dict):
        raise UnreadableState(path, f"it holds a {type(state).__name__}, not a resume state")
    return state


def remove_stale_temporaries(out_dir: Path, checkpoint_dir: Path) -> None:
    """A SIGKILL during an atomic write leaves its temporary behind; clear this run's."""
    for stale in checkpoint_dir.glob(".*.pt.*.tmp"):
        stale.unlink(missing_ok=True)
    for stale in out_dir.parent.glob(f".{out_dir.name}.*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
