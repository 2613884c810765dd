"""Stage train: `vocabscale train`, one run of the grid, under torchrun when it has several GPUs.

Exits with EXIT_PREEMPTED after SIGTERM, once the state is saved, so that the scheduler (the
train rule retries; SLURM requeues) runs it again and it resumes.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import asdict
from pathlib import Path

from vocabscale.config import ParamsError, add_params_argument, load_params
from vocabscale.sweep import model_specs
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
    spec, config = specs[args.model], TrainConfig.from_params(params["train"])
    check_loss_head(config.loss_head, config.device)
    if spec.gpus > 1 and not distributed.launched():
        # One process per GPU: this very command again, under torchrun.
        distributed.check_devices(spec.gpus, config.device)
        status, terminated = distributed.launch(spec.gpus, args.argv)
        if status:
            log.error("torchrun exited with status %d", status)
            sys.exit(EXIT_PREEMPTED if terminated else status)
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
