"""Stage fit-tokenization: f(V) = a ln(V)^2 + b ln(V) + c tokens per character, from the
measured token and character counts of every tokenizer's training split."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from vocabscale.config import add_params_argument, load_params
from vocabscale.io import output_lock, read_json, write_json
from vocabscale.tokens_per_char import fit_tokens_per_char

log = logging.getLogger(__name__)


def fit_tokenization(stats_paths: list[str | Path], out: str | Path) -> dict[str, Any]:
    points = []
    for path in stats_paths:
        stats = read_json(path)
        train = stats["splits"]["train"]
        points.append(
            {
                "vocab_size": stats["vocab_size"],
                "tokens": train["tokens"],
                "characters": train["characters"],
                "tokens_per_character": stats["tokens_per_character"],
            }
        )
    points.sort(key=lambda point: point["vocab_size"])
    f, quality = fit_tokens_per_char(
        [p["vocab_size"] for p in points], [p["tokens_per_character"] for p in points]
    )
    result = {**f.as_dict(), **quality, "points": points}
    write_json(out, result)
    log.info("f(V) = %.6g ln(V)^2 + %.6g ln(V) + %.6g", f.a, f.b, f.c)
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_params_argument(parser)
    parser.add_argument("--tokens-dir", required=True, help="holds v<V>/stats.json for every V")
    parser.add_argument("--out", required=True, help="the fit.json to write")


def run(args: argparse.Namespace) -> None:
    vocab_sizes = load_params(args.params)["tokenizer"]["vocab_sizes"]
    with output_lock(args.out):
        fit_tokenization(
            [Path(args.tokens_dir) / f"v{v}" / "stats.json" for v in vocab_sizes], args.out
        )
