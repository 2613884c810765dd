"""Part "resume": a short real run on the device, stopped by SIGTERM mid-run and resumed by
`vocabscale train` in a new process, against the same run uninterrupted.

The run is a model of the embedded default (params.yaml) on a token folder this part writes
(`phrase_tokens`: learnable, in the format the tokenize stage writes), at the device's default
precision (bf16 on CUDA), without torch.compile. It runs in this part's process, through the
loop `vocabscale train` runs (`train_run`), until a thread sends the process SIGTERM once the
run has checkpointed, as a scheduler would: the run must stop with `Preempted`, its state
saved (the command turns that into exit status 75, which tests/test_train.py checks).
`vocabscale train` started on it must then resume from that step and finish, while the same
run goes uninterrupted in this process beside it. The evaluations must be the same: bit for
bit on a CPU in fp32 (one thread), within bf16 rounding on a GPU, where some backward kernels
(flash attention's, among others) add in a varying order.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from proof_common import EMBEDDED_PARAMS, PartLog, Settings, phrase_tokens

from vocabscale.config import load_params, read_yaml
from vocabscale.io import TOKEN_SPLITS, setup_logging, token_dtype
from vocabscale.sweep import model_specs
from vocabscale.train.config import TrainConfig
from vocabscale.train.distributed import PREEMPTED
from vocabscale.train.loop import Preempted, train_run

#: Largest relative difference of an evaluation's mean loss from the uninterrupted run's: two
#: units of bf16 rounding (8 significant bits) on a GPU; fp32 on a CPU is exact.
TOLERANCE = {"bf16": 2.0**-7, "fp32": 0.0}


def planned_cases(settings: Settings) -> list[dict[str, Any]]:
    return [{"check": "resume", "status": "pending"}]


def write_tokens(folder: Path, vocab_size: int, train_tokens: int, validation: int) -> Path:
    """train.bin, validation.bin and stats.json, as `vocabscale tokenize` writes them."""
    folder.mkdir(parents=True)
    stats: dict[str, Any] = {"vocab_size": vocab_size, "dtype": token_dtype(vocab_size).name}
    stats["splits"] = {}
    counts = {"train": train_tokens, "validation": validation}
    for seed, split in enumerate(TOKEN_SPLITS):
        array = phrase_tokens(vocab_size, counts[split], seed).astype(token_dtype(vocab_size))
        array.tofile(folder / f"{split}.bin")
        digest = hashlib.sha256(array.tobytes()).hexdigest()
        # synthetic text: call a token four characters (the unit only scales `characters`)
        stats["splits"][split] = {
            "documents": 1,
            "characters": 4 * len(array),
            "tokens": len(array),
            "sha256": digest,
        }
    stats["splits"]["validation"]["utf8_bytes"] = 4 * validation
    stats["tokens_per_character"] = 0.25
    (folder / "stats.json").write_text(json.dumps(stats, indent=1))
    return folder


def write_params(path: Path, settings: Settings, device: torch.device) -> Path:
    """params.yaml (the embedded default), its one model trained on this device, with a
    checkpoint every 10 steps."""
    params = read_yaml(EMBEDDED_PARAMS)
    model = params["models"][settings.resume_model]
    params["models"] = {"run": {**model, "train_tokens": settings.resume_train_tokens}}
    params["train"].update(settings.resume_train, device=device.type, checkpoint_every=10, evals=4)
    params["train"]["threads"] = 1 if device.type == "cpu" else 0
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def start_train(params: Path, tokens: Path, root: Path) -> subprocess.Popen:
    """`vocabscale train` of the run into root/run, its state in root/checkpoint."""
    root.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "vocabscale", "train", "--params", str(params)]
    command += ["--model", "run", "--tokens", str(tokens), "--out", str(root / "run")]
    command += ["--checkpoint-dir", str(root / "checkpoint"), "--log", str(root / "train.log")]
    with open(root / "stderr.txt", "ab") as stderr:
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)


def wait(process: subprocess.Popen, log: PartLog) -> int:
    """The exit status, or TimeoutExpired at the part's cap (the orchestrator then kills the
    process group)."""
    return process.wait(timeout=max(log.time_left(), 1))


def in_process(params_file: Path, tokens: Path, root: Path) -> dict[str, Any]:
    """The run in this process, through the loop `vocabscale train` runs (`train_run`),
    logged to root/train.log; returns its run.json."""
    setup_logging(root / "train.log")
    params = load_params(params_file)
    config = TrainConfig.from_params(params["train"])
    spec = model_specs(params)["run"]
    return train_run(spec, tokens, config, root / "run", root / "checkpoint")


def interrupted(params_file: Path, tokens: Path, root: Path, log: PartLog) -> dict[str, Any]:
    """The run, sent SIGTERM (by a thread, as a scheduler would) once it has checkpointed:
    it must stop with `Preempted`, its state saved; returns whether it did, and the step."""
    state, finished = root / "checkpoint" / "state.pt", threading.Event()

    def terminate_when_saved() -> None:
        while not state.exists() and not finished.is_set() and log.time_left() > 0:
            time.sleep(0.02)
        if not finished.is_set():
            os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, lambda *_: None)  # a late one: after the run
    threading.Thread(target=terminate_when_saved, daemon=True).start()
    try:
        in_process(params_file, tokens, root)
        preempted = False
    except Preempted as stop:
        logging.getLogger("vocabscale").warning("%s", stop)
        preempted = True
    finally:
        finished.set()
        signal.signal(signal.SIGTERM, previous)
    marker = root / "checkpoint" / PREEMPTED
    stopped = json.loads(marker.read_text())["step"] if marker.exists() else None
    return {"preempted": preempted, "stopped_at_step": stopped}


def compare(reference: pd.DataFrame, resumed: pd.DataFrame, tolerance: float) -> dict[str, Any]:
    """Every evaluation point of the resumed run against the uninterrupted run's."""
    ref_loss = reference["eval_ce_sum"] / reference["eval_tokens"]
    res_loss = resumed["eval_ce_sum"] / resumed["eval_tokens"]
    same_points = list(reference["step"]) == list(resumed["step"])
    difference = (res_loss - ref_loss).abs() / ref_loss if same_points else pd.Series([np.inf])
    points = [
        {"step": int(step), "reference": float(a), "resumed": float(b)}
        for step, a, b in zip(reference["step"], ref_loss, res_loss)
    ]
    worst = float(difference.max())
    return {
        "points": points,
        "max_relative_difference": worst,
        "tolerance": tolerance,
        "same_points": same_points,
        "evals_match": same_points and worst <= tolerance,
    }


def resumed_from(log_file: Path) -> int | None:
    """The step the second start resumed from, as its log says."""
    text = log_file.read_text() if log_file.exists() else ""
    match = re.search(r"resuming \S+ from step (\d+) of \d+", text)
    return int(match.group(1)) if match else None


def verdict(case: dict[str, Any]) -> bool:
    """Stopped mid-run with its state saved, resumed from there, and the same evaluations."""
    stopped, total = case.get("stopped_at_step"), case.get("total_steps") or 0
    return (
        bool(case.get("preempted"))
        and stopped is not None
        and 0 < stopped < total
        and case.get("resumed_from_step") == stopped
        and case.get("exit_after_resume") == 0
        and bool(case.get("evals_match"))
    )


def short_run(case: dict[str, Any], settings: Settings, device: torch.device, log: PartLog):
    """The run stopped and resumed, and beside its resume the run uninterrupted; fills
    `case`."""
    work = log.path.parent / "resume"
    size = settings.resume_vocab_size
    corpus = int(1.1 * settings.resume_train_tokens)  # the run reads each window once
    folder = work / "tokens" / f"v{size}"
    tokens = write_tokens(folder, size, corpus, settings.resume_validation_tokens)
    params = write_params(work / "params.yaml", settings, device)
    case.update(interrupted(params, tokens, work / "interrupted", log))
    print(
        f"  resume: SIGTERM at step {case['stopped_at_step']} (preempted: {case['preempted']});"
        " `vocabscale train` resumes it, the uninterrupted run beside it",
        flush=True,
    )
    log.save()
    resume = start_train(params, tokens, work / "interrupted")
    run = in_process(params, tokens, work / "reference")
    case["exit_after_resume"] = wait(resume, log)
    case["resumed_from_step"] = resumed_from(work / "interrupted" / "train.log")
    case.update(total_steps=run["steps"], precision=run["precision"], model=settings.resume_model)
    case.update(vocab_size=size, shape=f"{run['n_layer']}x{run['d_model']}")
    evals = [
        pd.read_csv(work / name / "run" / "evals.csv") for name in ("reference", "interrupted")
    ]
    case.update(compare(*evals, TOLERANCE[run["precision"]]))


def run(log: PartLog, settings: Settings, device: torch.device) -> None:
    case = log.data["cases"][0]
    print(f"  resume: model {settings.resume_model} of params.yaml, {device.type}", flush=True)
    log.attempt(case, device, lambda: short_run(case, settings, device, log))
    case["passed"] = verdict(case)
    print(f"  resume: {summary(case)}", flush=True)
    log.save()


def summary(case: dict[str, Any]) -> str:
    if case["status"] != "ok":
        return case["status"]
    return (
        f"stopped at step {case['stopped_at_step']} of {case['total_steps']}, resumed from "
        f"{case['resumed_from_step']} by a new process; evaluations "
        f"within {case['max_relative_difference']:.2g} of the uninterrupted run's (tolerance "
        f"{case['tolerance']:.2g}): {'PASSED' if case['passed'] else 'FAILED'}"
    )
