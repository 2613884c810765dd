"""`vocabscale estimate`: every approach fitted on any runs table, from this pipeline or any
other training stack, with coefficients.json and predictions.csv written to one directory. The
directory is written as a whole (one rename), so the two files always belong together.

Options start from the params schema's defaults (the paper's choices); each approach's flags
are declared in its registry entry (`vocabscale.estimate.approaches`).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from vocabscale.estimate.fit import estimate_all
from vocabscale.estimate.options import (
    add_estimate_options,
    add_table_arguments,
    options_from_args,
    resolve_tokenization,
)
from vocabscale.estimate.predict import predictions_with_methods
from vocabscale.estimate.results import Estimates
from vocabscale.io import atomic_dir, check_out_dir, write_csv, write_json
from vocabscale.runs.table import parse_renames, prepare_runs, read_runs_csv

log = logging.getLogger(__name__)

#: Targets of the predictions table: the paper's.
DEFAULT_TARGETS = (2.87e9, 7e9, 13e9, 30e9, 70e9, 130e9, 300e9)

#: What `--out` holds afterwards (with the marker of a published directory).
OUTPUTS = ("coefficients.json", "predictions.csv")


def write_estimates(
    estimates: Estimates,
    out_dir: str | Path,
    targets: list[dict[str, Any]] | None = None,
    force: bool = False,
) -> None:
    """coefficients.json and predictions.csv (the paper's targets unless given), written as
    one directory (`force`: see `vocabscale.io.check_out_dir`)."""
    targets = targets or [{"name": f"{n:.3g}", "nnv": n} for n in DEFAULT_TARGETS]
    table = predictions_with_methods(estimates, targets)
    with atomic_dir(out_dir, force) as tmp:
        write_json(tmp / OUTPUTS[0], estimates.to_json())
        write_csv(tmp / OUTPUTS[1], table)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_table_arguments(parser)
    parser.add_argument(
        "--compare-authors",
        action="store_true",
        help="also fit the other method; predictions.csv then has both (column `method`)",
    )
    add_estimate_options(parser)


def run(args: argparse.Namespace) -> None:
    frame = read_runs_csv(args.runs, parse_renames(args.column))
    f_fit, tokenization = resolve_tokenization(args.tokenization, frame, args.runs)
    options = options_from_args(args)
    runs = prepare_runs(frame, f_fit.f, args.runs, options["target"])
    out_dir = Path(args.out)
    check_out_dir(out_dir, args.force)  # before fitting
    estimates = estimate_all(runs, f_fit, tokenization, options, args.compare_authors)
    write_estimates(estimates, out_dir, force=args.force)
    print(f"wrote {Path(args.out) / 'coefficients.json'} and {Path(args.out) / 'predictions.csv'}")
