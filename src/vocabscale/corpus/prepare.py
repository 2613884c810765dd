"""Command `vocabscale prepare-corpus`: the source corpus read once, deduplicated, split by
document and sharded (`split`)."""

from __future__ import annotations

import argparse

from vocabscale.config import add_params_argument, load_params
from vocabscale.corpus.split import prepare_corpus
from vocabscale.io import check_out_dir, output_lock


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_params_argument(parser)
    parser.add_argument("--out", required=True, help="the corpus directory to write")


def run(args: argparse.Namespace) -> None:
    corpus = load_params(args.params)["corpus"]
    with output_lock(args.out):
        check_out_dir(args.out)  # before any work: never replace what it did not write
        prepare_corpus(corpus, args.out)
