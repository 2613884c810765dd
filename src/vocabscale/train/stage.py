"""Stage train: `vocabscale train`, one run of the grid, under torchrun when it has several
processes (GPUs, or nodes).

Exits with EXIT_PREEMPTED after SIGTERM, once the state is saved, so that the scheduler (the
train rule retries; SLURM requeues) runs it again and it resumes. The run directory and the
checkpoint directory are locked while it runs (by the process that starts torchrun, for all
of its workers), so a second `vocabscale train` of the same run stops before touching them.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from vocabscale import preemption
from vocabscale.config import ParamsError, add_params_argument, load_params
from vocabscale.io import output_lock, read_json
from vocabscale.sweep import ModelSpec, model_specs, parallelism
from vocabscale.train import distributed
from vocabscale.train.config import TrainConfig
from vocabscale.train.live import live_curves
from vocabscale.train.loop import Preempted, train_run
from vocabscale.train.model import check_loss_head

log = logging.getLogger(__name__)

#: Exit status after SIGTERM: the state is saved, the scheduler should retry the job.
EXIT_PREEMPTED = 75


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_params_argument(parser)
    parser.add_argument("--model", required=True, help="a key of `models` in params")
    parser.add_argument("--tokens", required=True, help="the token directory of one V")
    parser.add_argument("--out", required=True, help="the run directory to write")
    parser.add_argument(
        "--checkpoint-dir", required=True, help="where the resume state lives (kept across runs)"
    )


def run(args: argparse.Namespace) -> None:
    params = load_params(args.params)
    specs = model_specs(params)
    if args.model not in specs:
        raise ParamsError(
            f"{args.params}: models.{args.model} does not exist (models: {', '.join(specs)})"
        )
    config = TrainConfig.from_params(params["train"])
    check_loss_head(config.loss_head, config.device)
    vocab_size = read_json(Path(args.tokens) / "stats.json")["vocab_size"]
    # `auto` resolved for this run: DDP, or FSDP when DDP would not fit a GPU
    spec = specs[args.model]
    spec = dataclasses.replace(spec, parallel=parallelism(spec, vocab_size, params).kind)
    with contextlib.ExitStack() as locks:
        if not distributed.launched():  # torchrun's workers run under their launcher's locks
            locks.enter_context(output_lock(args.out))
            locks.enter_context(output_lock(args.checkpoint_dir))
        train_or_launch(args, spec, vocab_size, config, params)


def train_or_launch(
    args: argparse.Namespace,
    spec: ModelSpec,
    vocab_size: int,
    config: TrainConfig,
    params: dict[str, Any],
) -> None:
    """Train on this process, or start the run's processes under torchrun."""
    if not distributed.launched():
        distributed.check_devices(spec.gpus, config.device)
        if spec.processes > 1:
            status = run_workers(args, spec, vocab_size, params)
            if status:
                sys.exit(status)
            return
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
        sys.exit(EXIT_PREEMPTED)


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
