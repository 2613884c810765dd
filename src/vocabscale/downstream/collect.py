"""Command `vocabscale collect-downstream`: the downstream scores of the grid in one table,
results/downstream.csv (`grid_table`)."""

from __future__ import annotations

import argparse

from vocabscale.config import add_params_argument, load_params
from vocabscale.downstream.grid_table import collect_downstream
from vocabscale.sweep import run_grid


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_params_argument(parser)
    parser.add_argument("--results-dir", required=True, help="holds <model>-v<V>.json")
    parser.add_argument("--out", required=True, help="the table (CSV) to write")


def run(args: argparse.Namespace) -> None:
    collect_downstream(run_grid(load_params(args.params)), args.results_dir, args.out)
