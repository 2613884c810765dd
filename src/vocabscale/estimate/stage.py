"""Stage estimate-<approach>: one approach fitted on the pipeline's runs table, with its
bootstrap refits (and, with `report.compare_authors`, the other method's fit), written as JSON
(`results.ApproachResult`). An approach that cannot be fitted writes its error instead, so that
the others still reach the report."""

from __future__ import annotations

import argparse
import logging

from vocabscale.config import add_params_argument, load_params
from vocabscale.estimate.approaches import APPROACHES
from vocabscale.estimate.fit import estimate_with_methods
from vocabscale.estimate.results import FailedApproach
from vocabscale.io import output_lock, write_json
from vocabscale.runs.table import RunsTableError, load_runs
from vocabscale.tokens_per_char import load_tokens_per_char_fit

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_params_argument(parser)
    parser.add_argument("--runs", required=True, help="the runs table (CSV)")
    parser.add_argument("--tokenization", required=True, help="fit.json of fit-tokenization")
    parser.add_argument("--out", required=True, help="the approach's JSON to write")


def run(args: argparse.Namespace) -> None:
    approach = args.command.removeprefix("estimate-")
    if approach not in APPROACHES:
        raise ValueError(
            f"vocabscale {args.command}: no such approach; the approaches are "
            + ", ".join(f"estimate-{name}" for name in APPROACHES)
        )
    params = load_params(args.params)
    section = params["estimate"]
    spec = "paper" if section["tokenization"] == "paper" else args.tokenization
    f_fit = load_tokens_per_char_fit(spec)
    f = f_fit.f
    runs = load_runs(args.runs, f, target=section["target"])
    with output_lock(args.out):
        try:
            compare = params["report"]["compare_authors"]
            result = estimate_with_methods(approach, runs, f_fit, section, compare)
        except (RunsTableError, RuntimeError) as error:
            log.error("%s could not be fitted: %s", approach, error)
            result = FailedApproach(approach, str(error))
        result.tokenization = {**f.as_dict(), "source": str(spec)}
        write_json(args.out, result.to_json())
