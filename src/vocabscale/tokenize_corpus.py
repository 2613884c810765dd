"""Stage tokenize: the corpus under one tokenizer, as flat memory-mappable token arrays.

Outputs (one directory per V):
  train.bin, validation.bin   token ids (uint16 when V <= 65536, else uint32); every document is
                              preceded by end-of-text, so every text token is a target
  unigram_counts.npy          int64 count of each id in train.bin (the unigram distribution)
  stats.json                  tokens, documents and characters per split, dtype
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from tokenizers import Tokenizer
from tqdm import tqdm

from vocabscale.config import END_OF_TEXT
from vocabscale.io import atomic_dir, token_dtype, write_json
from vocabscale.prepare_corpus import read_texts, train_shards

log = logging.getLogger(__name__)


def _batches(paths: list[Path], batch_documents: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for path in paths:
        for text in read_texts(path):
            batch.append(text)
            if len(batch) == batch_documents:
                yield batch
                batch = []
    if batch:
        yield batch


def tokenize_split(
    tokenizer: Tokenizer,
    paths: list[Path],
    out: BinaryIO,
    counts: np.ndarray,
    batch_documents: int,
    desc: str,
) -> dict[str, int]:
    """Encode documents batch by batch and append them to `out`; update unigram `counts`."""
    vocab_size = tokenizer.get_vocab_size()
    dtype = token_dtype(vocab_size)
    end_of_text = tokenizer.token_to_id(END_OF_TEXT)
    stats = {"documents": 0, "characters": 0, "tokens": 0}
    progress = tqdm(desc=desc, unit=" docs", unit_scale=True, mininterval=2)
    for texts in _batches(paths, batch_documents):
        encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
        pieces = []
        for encoding in encodings:
            pieces.append(np.array([end_of_text], dtype=dtype))
            pieces.append(np.asarray(encoding.ids, dtype=dtype))
        ids = np.concatenate(pieces)
        out.write(ids.tobytes())
        counts += np.bincount(ids, minlength=vocab_size)
        stats["documents"] += len(texts)
        stats["characters"] += sum(len(text) for text in texts)
        stats["tokens"] += len(ids)
        progress.update(len(texts))
    progress.close()
    return stats


def tokenize_corpus(
    corpus_dir: str | Path, tokenizer_path: str | Path, out_dir: str | Path, batch_documents: int
) -> dict[str, Any]:
    corpus_dir = Path(corpus_dir)
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    vocab_size = tokenizer.get_vocab_size()
    splits = {"train": train_shards(corpus_dir), "validation": [corpus_dir / "validation.parquet"]}
    train_counts = np.zeros(vocab_size, dtype=np.int64)
    with atomic_dir(out_dir) as tmp:
        stats: dict[str, Any] = {"vocab_size": vocab_size, "dtype": token_dtype(vocab_size).name}
        stats["splits"] = {}
        for split, paths in splits.items():
            counts = train_counts if split == "train" else np.zeros_like(train_counts)
            with open(tmp / f"{split}.bin", "wb") as out:
                stats["splits"][split] = tokenize_split(
                    tokenizer,
                    paths,
                    out,
                    counts,
                    batch_documents,
                    f"tokenize V={vocab_size} {split}",
                )
        np.save(tmp / "unigram_counts.npy", train_counts)
        train = stats["splits"]["train"]
        stats["tokens_per_character"] = train["tokens"] / train["characters"]
        write_json(tmp / "stats.json", stats)
    log.info(
        "V=%d: %d train tokens, %.4f tokens per character",
        vocab_size,
        train["tokens"],
        stats["tokens_per_character"],
    )
    return stats
