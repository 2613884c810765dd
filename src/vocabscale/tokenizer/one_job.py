"""The tokenize stage in one job: both splits of the corpus under one tokenizer, into the token
directory (train.bin, validation.bin, unigram_counts.npy, stats.json; docs/design.md), resuming
the partial work of an earlier run."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from vocabscale.corpus.shards import train_shards, utf8_bytes
from vocabscale.io import TOKEN_SPLITS, publish_dir, read_json, token_dtype, write_json
from vocabscale.tokenizer.arrays import load_tokenizer, tokenize_splits
from vocabscale.tokenizer.batching import Batching
from vocabscale.tokenizer.resume import PROGRESS, partial_dir

log = logging.getLogger(__name__)


def corpus_characters(corpus_dir: Path) -> dict[str, int]:
    """Characters of each split, for the progress bars (absent before prepare-corpus wrote
    them)."""
    path = corpus_dir / "stats.json"
    splits = read_json(path)["splits"] if path.exists() else {}
    return {split: stats["characters"] for split, stats in splits.items()}


def publish_tokens(
    work: Path, out_dir: Path, done: dict[str, dict[str, Any]], validation: Path, vocab_size: int
) -> dict[str, Any]:
    """Write stats.json beside the finished arrays and publish the directory."""
    stats: dict[str, Any] = {"vocab_size": vocab_size, "dtype": token_dtype(vocab_size).name}
    stats["splits"] = {split: done[split] for split in TOKEN_SPLITS}
    stats["splits"]["validation"]["utf8_bytes"] = utf8_bytes(validation)
    train = stats["splits"]["train"]
    stats["tokens_per_character"] = train["tokens"] / train["characters"]
    write_json(work / "stats.json", stats)
    # the progress record stays until every file is synced: a kill meanwhile loses nothing
    publish_dir(work, out_dir, leave=[PROGRESS])
    return stats


def tokenize_corpus(
    corpus_dir: str | Path, tokenizer_path: str | Path, out_dir: str | Path, batching: Batching
) -> dict[str, Any]:
    """Run the stage in one job; returns the stats it wrote."""
    corpus_dir, out_dir, tokenizer_path = Path(corpus_dir), Path(out_dir), Path(tokenizer_path)
    tokenizer = load_tokenizer(tokenizer_path)
    validation = corpus_dir / "validation.parquet"
    inputs = {"train": train_shards(corpus_dir), "validation": [validation]}
    work = partial_dir(out_dir)
    totals = corpus_characters(corpus_dir)
    progress = tokenize_splits(tokenizer, tokenizer_path, inputs, work, totals, batching)
    vocab_size = tokenizer.get_vocab_size()
    stats = publish_tokens(work, out_dir, progress.done, validation, vocab_size)
    log.info(
        "V=%d: %d train tokens, %.4f tokens per character",
        vocab_size,
        stats["splits"]["train"]["tokens"],
        stats["tokens_per_character"],
    )
    return stats
