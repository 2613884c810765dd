"""Command `vocabscale downstream`: one run scored on `downstream.tasks` (`harness`), its
record written as JSON, under the output's lock (which also clears the scratch model a killed
evaluation left), against the fingerprint of the task files and the harness (`tasks`)."""

from __future__ import annotations

import argparse

from vocabscale.config import add_params_argument, load_params
from vocabscale.downstream.harness import evaluate_run
from vocabscale.downstream.tasks import check_fingerprint
from vocabscale.io import output_lock


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_params_argument(parser)
    parser.add_argument("--run", required=True, help="the run directory")
    parser.add_argument("--tokenizer", required=True, help="the run's tokenizer.json")
    parser.add_argument(
        "--tasks", required=True, help="the fingerprint of the tasks (downstream-tasks' output)"
    )
    parser.add_argument("--out", required=True, help="the JSON record to write")


def run(args: argparse.Namespace) -> None:
    settings = load_params(args.params)["downstream"]
    with output_lock(args.out):
        fingerprint = check_fingerprint(args.tasks, settings)
        evaluate_run(args.run, args.tokenizer, args.out, settings, fingerprint)
