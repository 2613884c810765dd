"""Where `vocabscale train` trains: on this process, or on the run's processes started under
torchrun (one command line for both engines, whatever the run's GPUs and nodes), and the exit
status that tells the scheduler to run it again after a preemption."""

from __future__ import annotations

import argparse
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from vocabscale import preemption
from vocabscale.sweep import ModelSpec
from vocabscale.train import distributed
from vocabscale.train.config import TrainConfig
from vocabscale.train.live import live_curves
from vocabscale.train.loop import Preempted, train_run

log = logging.getLogger(__name__)

#: Exit status after SIGTERM: the state is saved, the scheduler should retry the job.
EXIT_PREEMPTED = 75


def train_or_launch(
    args: argparse.Namespace,
    spec: ModelSpec,
    vocab_size: int,
    config: TrainConfig,
    params: dict[str, Any],
) -> int:
    """Train on this process, or start the run's processes under torchrun (`args` is the
    command's: they run its command line again). Returns the exit status: 0, EXIT_PREEMPTED,
    or torchrun's failing status."""
    if not distributed.launched():
        distributed.check_devices(spec.gpus, config.device)
        if spec.processes > 1:
            return run_workers(args, spec, vocab_size, params)
    curves = params["live"]
    if distributed.rank() > 0:  # rank 0 speaks for the run
        logging.getLogger().setLevel(logging.WARNING)
        curves = {"logger": "none"}
    run_params = {"model": spec.name, **asdict(spec.shape), **params["train"]}
    try:
        with live_curves(curves, Path(args.out).name, run_params):
            train_run(spec, args.tokens, config, args.out, args.checkpoint_dir)
    except Preempted as stop:
        log.warning("%s", stop)
        return EXIT_PREEMPTED
    return 0


def run_workers(
    args: argparse.Namespace, spec: ModelSpec, vocab_size: int, params: dict[str, Any]
) -> int:
    """This very command again, under torchrun: `gpus` processes on each of `nodes` nodes.
    Returns 0, EXIT_PREEMPTED when the workers stopped at SIGTERM with their state saved
    (torchrun itself then says 1), or torchrun's failing status. torchrun gives its workers
    the run's grace window to save before it kills them."""
    grace = preemption.grace_seconds(spec.shape, vocab_size, params["cluster"])
    if spec.nodes == 1:
        command = distributed.torchrun_command(1, spec.gpus, args.argv, grace)
    else:
        command = distributed.srun_torchrun_command(spec.nodes, spec.gpus, args.argv, grace)
    status, preempted = distributed.launch(command, Path(args.checkpoint_dir))
    if status and preempted:
        log.warning("stopped by SIGTERM (torchrun exited %d); the next attempt resumes", status)
        return EXIT_PREEMPTED
    if status:
        log.error("torchrun exited with status %d", status)
    return status
