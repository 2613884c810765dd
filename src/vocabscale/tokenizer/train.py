"""Command `vocabscale train-tokenizer`: the BPE of one vocabulary size (`training`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from vocabscale.config import add_params_argument, load_params
from vocabscale.io import output_lock
from vocabscale.tokenizer.bpe import set_threads
from vocabscale.tokenizer.training import train_tokenizer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_params_argument(parser)
    parser.add_argument("--corpus", required=True, help="the corpus directory")
    parser.add_argument("--vocab-size", type=int, required=True)
    parser.add_argument("--out", required=True, help="the tokenizer.json to write")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: all cores)")


def run(args: argparse.Namespace) -> None:
    section = load_params(args.params)["tokenizer"]
    set_threads(args.threads)
    with output_lock(args.out):
        train_tokenizer(
            Path(args.corpus) / "tokenizer_sample.parquet",
            args.vocab_size,
            args.out,
            section["min_frequency"],
            section["batch_documents"],
        )
