"""`vocabscale estimate`: every approach fitted on any runs table, from this pipeline or any
other training stack, with coefficients.json and predictions.csv written to one directory. The
directory is written as a whole (one rename), so the two files always belong together.

Options start from the params schema's defaults (the paper's choices); each approach's flags
are declared in its registry entry (`vocabscale.estimate.approaches`).
"""

from __future__ import annotations

import argparse
import copy
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vocabscale.config import defaults, describe
from vocabscale.estimate.approaches import APPROACHES, Option
from vocabscale.estimate.fit import estimate_all
from vocabscale.estimate.methods import METHODS
from vocabscale.estimate.predict import predictions_with_methods
from vocabscale.estimate.results import Estimates
from vocabscale.io import atomic_dir, write_csv, write_json
from vocabscale.runs.table import (
    TARGETS,
    RunsTableError,
    parse_renames,
    prepare_runs,
    read_runs_csv,
    tokens_per_char_from_table,
)
from vocabscale.tokens_per_char import (
    TokensPerCharFit,
    fit_tokens_per_char,
    load_tokens_per_char_fit,
)

log = logging.getLogger(__name__)

#: Targets of the predictions table: the paper's.
DEFAULT_TARGETS = (2.87e9, 7e9, 13e9, 30e9, 70e9, 130e9, 300e9)

#: What `--out` holds afterwards, and nothing else.
OUTPUTS = ("coefficients.json", "predictions.csv")


def check_out_dir(out_dir: Path) -> None:
    """`--out` is replaced as a whole: refuse one that holds anything else, before fitting."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir}: not a directory")
    others = sorted(p.name for p in out_dir.glob("*") if p.name not in OUTPUTS)
    if others:
        raise ValueError(
            f"--out {out_dir} holds {', '.join(others[:5])}{', ...' if len(others) > 5 else ''}; "
            f"it is replaced as a whole by {' and '.join(OUTPUTS)}: give a new or empty directory"
        )


#: Flags of the `estimate.bootstrap` section.
BOOTSTRAP_OPTIONS = (
    Option("--bootstrap", ("samples",), type=int),
    Option("--confidence", ("confidence",)),
    Option("--seed", ("seed",), type=int),
)


def options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The `estimate` section of the defaults with what the command line gives; an option not
    given changes nothing."""
    options = copy.deepcopy(defaults("estimate"))
    sections = [(name, approach.options) for name, approach in APPROACHES.items()]
    for section, declared in [*sections, ("bootstrap", BOOTSTRAP_OPTIONS)]:
        for option in declared:
            given = getattr(args, option.flag.lstrip("-").replace("-", "_"))
            if given is not None:
                options[section].update(option.values(given))
    if args.method is not None:
        options["method"] = args.method
    if args.target is not None:
        options["target"] = args.target
    if args.huber_delta is not None:
        for name in APPROACHES:
            if "huber_delta" in options[name]:
                options[name]["huber_delta"] = args.huber_delta
    return options


def resolve_tokenization(
    spec: str | None, runs_frame: pd.DataFrame, source: str
) -> tuple[TokensPerCharFit, dict[str, Any]]:
    """f(V) with its covariance from `paper`, a fit.json, or (spec None) the table's own
    tokens and characters."""
    if spec is not None:
        f_fit = load_tokens_per_char_fit(spec)
        return f_fit, {**f_fit.f.as_dict(), "source": str(spec)}
    measured = tokens_per_char_from_table(runs_frame)
    if measured is None or len(measured[0]) < 3:
        raise RunsTableError(
            f"{source}: cannot fit f(V) from the table (it needs 'tokens' and 'characters' for at "
            "least 3 vocabulary sizes); pass --tokenization paper or --tokenization FIT.json"
        )
    f, quality = fit_tokens_per_char(*measured)
    covariance = quality["covariance"]
    f_fit = TokensPerCharFit(f, None if covariance is None else np.asarray(covariance))
    return f_fit, {**f.as_dict(), **quality, "source": f"fitted on {source}"}


def write_estimates(
    estimates: Estimates, out_dir: str | Path, targets: list[dict[str, Any]] | None = None
) -> None:
    """coefficients.json and predictions.csv (the paper's targets unless given), written as
    one directory."""
    targets = targets or [{"name": f"{n:.3g}", "nnv": n} for n in DEFAULT_TARGETS]
    table = predictions_with_methods(estimates, targets)
    with atomic_dir(out_dir) as tmp:
        write_json(tmp / OUTPUTS[0], estimates.to_json())
        write_csv(tmp / OUTPUTS[1], table)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", required=True, help="runs table (CSV)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument(
        "--column",
        action="append",
        metavar="THEIRS=OURS",
        help="rename a column of the table (repeatable)",
    )
    parser.add_argument(
        "--tokenization", help="paper or a fit.json; default: fit f(V) on the table"
    )
    parser.add_argument("--method", choices=tuple(METHODS), help=describe("estimate.method"))
    parser.add_argument("--target", choices=TARGETS, help=describe("estimate.target"))
    parser.add_argument(
        "--compare-authors",
        action="store_true",
        help="also fit the other method; predictions.csv then has both (column `method`)",
    )
    for name, approach in APPROACHES.items():
        group = parser.add_argument_group(f"approach {approach.title} (estimate.{name})")
        for option in approach.options:
            option.add_to(group, f"estimate.{name}")
    group = parser.add_argument_group("every approach, and the bootstrap (estimate.bootstrap)")
    group.add_argument(
        "--huber-delta",
        type=float,
        help="the Huber delta of every approach's fits (default: each approach's huber_delta)",
    )
    for option in BOOTSTRAP_OPTIONS:
        option.add_to(group, "estimate.bootstrap")


def run(args: argparse.Namespace) -> None:
    frame = read_runs_csv(args.runs, parse_renames(args.column))
    f_fit, tokenization = resolve_tokenization(args.tokenization, frame, args.runs)
    options = options_from_args(args)
    runs = prepare_runs(frame, f_fit.f, args.runs, options["target"])
    out_dir = Path(args.out)
    check_out_dir(out_dir)
    estimates = estimate_all(runs, f_fit, tokenization, options, args.compare_authors)
    write_estimates(estimates, out_dir)
    print(f"wrote {Path(args.out) / 'coefficients.json'} and {Path(args.out) / 'predictions.csv'}")
