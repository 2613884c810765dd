"""`vocabscale plan`: every job of the grid with its geometry, cost and time limit, printed
before anyone submits dozens of them (`--csv`: the training jobs as a table)."""

from __future__ import annotations

import argparse
import sys

from vocabscale.cluster.plan import TOKENS_DIR, format_plan, plan
from vocabscale.config import add_params_argument, load_params


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_params_argument(parser)
    parser.add_argument("--csv", action="store_true", help="print the training jobs as CSV")
    parser.add_argument(
        "--tokens-dir", default=TOKENS_DIR, help="the tokenize stage's outputs, v<V>/stats.json"
    )


def run(args: argparse.Namespace) -> None:
    params = load_params(args.params)
    table = plan(params, args.tokens_dir).table
    if args.csv:
        table.to_csv(sys.stdout, index=False)
    else:
        print(format_plan(table, params))
