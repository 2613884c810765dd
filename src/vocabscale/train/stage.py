"""Stage train: `vocabscale train`, one run of the grid (`launch`: here, or under torchrun).

Locks the run directory and the checkpoint directory (the process that starts torchrun, for
all of its workers), so that a second `vocabscale train` of the same run stops before touching
them; exits 75 (`launch.EXIT_PREEMPTED`) after SIGTERM, its state saved, so that the scheduler
runs it again and it resumes.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
from pathlib import Path

from vocabscale.config import ParamsError, add_params_argument, load_params
from vocabscale.io import output_lock, read_json
from vocabscale.sweep import model_specs, parallelism
from vocabscale.train import distributed
from vocabscale.train.config import TrainConfig
from vocabscale.train.launch import train_or_launch
from vocabscale.train.model import check_loss_head


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
        status = train_or_launch(args, spec, vocab_size, config, params)
        if status:
            sys.exit(status)
