"""Command `vocabscale fit-tokenization`: f(V) from the token directories of every V
(`fitting`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from vocabscale.config import add_params_argument, load_params
from vocabscale.io import output_lock, read_json, write_json
from vocabscale.tokenizer.fitting import fit_tokenization


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_params_argument(parser)
    parser.add_argument("--tokens-dir", required=True, help="holds v<V>/stats.json for every V")
    parser.add_argument("--out", required=True, help="the fit.json to write")


def run(args: argparse.Namespace) -> None:
    vocab_sizes = load_params(args.params)["tokenizer"]["vocab_sizes"]
    with output_lock(args.out):
        stats = [read_json(Path(args.tokens_dir) / f"v{v}" / "stats.json") for v in vocab_sizes]
        write_json(args.out, fit_tokenization(stats))
