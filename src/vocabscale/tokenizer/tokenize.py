"""Command `vocabscale tokenize`: the corpus under one tokenizer as flat token arrays, in one
job (`one_job`), as one part of the training shards (`--part`) or gathered from the parts
(`--parts`, `parts`); each resumes its partial work (`resume`)."""

from __future__ import annotations

import argparse

from vocabscale.config import add_params_argument, load_params
from vocabscale.io import check_out_dir, output_lock
from vocabscale.tokenizer.batching import Batching
from vocabscale.tokenizer.bpe import set_threads
from vocabscale.tokenizer.one_job import tokenize_corpus
from vocabscale.tokenizer.parts import gather_parts, tokenize_part


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_params_argument(parser)
    parser.add_argument("--corpus", required=True, help="the corpus directory")
    parser.add_argument("--tokenizer", required=True, help="the tokenizer.json")
    parser.add_argument("--out", required=True, help="the token (or part) directory to write")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: all cores)")
    split = parser.add_mutually_exclusive_group()
    split.add_argument(
        "--part", type=int, help="tokenize only this part (from 0) of tokenizer.tokenize_jobs"
    )
    split.add_argument(
        "--parts", nargs="+", help="gather these part directories, in order, into --out"
    )


def run(args: argparse.Namespace) -> None:
    section = load_params(args.params)["tokenizer"]
    batching = Batching.from_params(section)
    set_threads(args.threads)
    with output_lock(args.out):  # and so its partial work, named after it
        check_out_dir(args.out)  # before any work: never replace what it did not write
        if args.part is not None:
            parts = section["tokenize_jobs"]
            tokenize_part(args.corpus, args.tokenizer, args.out, args.part, parts, batching)
        elif args.parts:
            gather_parts(args.corpus, args.tokenizer, args.parts, args.out, batching)
        else:
            tokenize_corpus(args.corpus, args.tokenizer, args.out, batching)
