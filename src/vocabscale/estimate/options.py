"""What the commands that fit a runs table of any origin share (`vocabscale estimate`,
`vocabscale backtest`): the table's arguments, each approach's and the bootstrap's options (as
params' `estimate` section), and f(V) from `paper`, a fit, or the table itself."""

from __future__ import annotations

import argparse
import copy
from typing import Any

import numpy as np
import pandas as pd

from vocabscale.config import defaults, describe
from vocabscale.estimate.approaches import APPROACHES, Option
from vocabscale.estimate.methods import METHODS
from vocabscale.runs.table import TARGETS, RunsTableError, tokens_per_char_from_table
from vocabscale.tokens_per_char import (
    TokensPerCharFit,
    fit_tokens_per_char,
    load_tokens_per_char_fit,
)


def add_table_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", required=True, help="runs table (CSV)")
    parser.add_argument(
        "--out",
        required=True,
        help="output directory: new, empty, or an earlier output of this command (replaced)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace an earlier output of this command even when files were added to it "
        "(never a directory it did not write)",
    )
    parser.add_argument(
        "--column",
        action="append",
        metavar="THEIRS=OURS",
        help="rename a column of the table (repeatable)",
    )
    parser.add_argument(
        "--tokenization", help="paper or a fit.json; default: fit f(V) on the table"
    )


def add_estimate_options(parser: argparse.ArgumentParser) -> None:
    """The method, each approach's flags (declared in its registry entry) and the bootstrap's."""
    parser.add_argument("--method", choices=tuple(METHODS), help=describe("estimate.method"))
    parser.add_argument("--target", choices=TARGETS, help=describe("estimate.target"))
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
