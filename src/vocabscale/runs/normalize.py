"""Command `vocabscale normalize`: loss, L_u, bpc and bpb of one run (`normalized_loss`)."""

from __future__ import annotations

import argparse

from vocabscale.config import add_params_argument, load_params
from vocabscale.io import output_lock, write_csv
from vocabscale.runs.normalized_loss import normalize_run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_params_argument(parser)
    parser.add_argument("--run", required=True, help="the run directory")
    parser.add_argument("--tokens", required=True, help="the token directory of its V")
    parser.add_argument("--out", required=True, help="the CSV to write")


def run(args: argparse.Namespace) -> None:
    pseudocount = load_params(args.params)["normalize"]["unigram_pseudocount"]
    with output_lock(args.out):
        write_csv(args.out, normalize_run(args.run, args.tokens, pseudocount))
