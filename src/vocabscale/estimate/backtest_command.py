"""`vocabscale backtest` (and the backtest stage): every approach judged on the runs it did not
see, on any runs table; writes backtest.csv (one row per comparison) and summary.json (per
approach, and the recommendation's rule) to one directory, written as a whole."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from vocabscale.config import load_params
from vocabscale.estimate.backtest import BacktestSettings, run_backtest
from vocabscale.estimate.options import (
    add_estimate_options,
    add_table_arguments,
    options_from_args,
    resolve_tokenization,
)
from vocabscale.io import atomic_dir, check_out_dir, output_lock, write_csv, write_json
from vocabscale.runs.table import parse_renames, prepare_runs, read_runs_csv

log = logging.getLogger(__name__)

#: What `--out` holds afterwards (with the marker of a published directory).
OUTPUTS = ("backtest.csv", "summary.json")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_table_arguments(parser)
    parser.add_argument(
        "--params", help="a params file whose `estimate` section to use (the pipeline's stage)"
    )
    add_estimate_options(parser)


def run(args: argparse.Namespace) -> None:
    options = options_from_args(args)
    spec = args.tokenization
    if args.params is not None:
        options = load_params(args.params)["estimate"]
        spec = "paper" if options["tokenization"] == "paper" else spec
    frame = read_runs_csv(args.runs, parse_renames(args.column))
    f_fit, _ = resolve_tokenization(spec, frame, args.runs)
    runs = prepare_runs(frame, f_fit.f, args.runs, options["target"])
    out_dir = Path(args.out)
    check_out_dir(out_dir, args.force)  # before any work; again under the lock
    settings = BacktestSettings(
        options,
        options["backtest"]["budget_fraction"],
        options["backtest"]["budgets"],
        options["bootstrap"]["samples"],
    )
    with output_lock(out_dir):
        check_out_dir(out_dir, args.force)
        backtest = run_backtest(runs, f_fit, settings)
        with atomic_dir(out_dir, args.force) as tmp:
            write_csv(tmp / OUTPUTS[0], backtest.comparisons)
            write_json(tmp / OUTPUTS[1], backtest.summary)
    print(f"wrote {out_dir / OUTPUTS[0]} and {out_dir / OUTPUTS[1]}: {backtest.rule.text}")
