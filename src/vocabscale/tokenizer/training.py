"""A byte-level BPE (HF `tokenizers`) of exactly V entries, trained on the corpus's tokenizer
sample: end-of-text, the 256 byte symbols, then V - 257 merges (`bpe`). Deterministic for a
given sample, whatever the batches it is fed in."""

from __future__ import annotations

import logging
import resource
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
from tokenizers import Tokenizer

from vocabscale.corpus.shards import read_texts
from vocabscale.io import atomic_path
from vocabscale.tokenizer.bpe import END_OF_TEXT, build_trainer, empty_tokenizer

log = logging.getLogger(__name__)


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def train_tokenizer(
    sample: str | Path,
    vocab_size: int,
    out: str | Path,
    min_frequency: int,
    batch_documents: int,
) -> Tokenizer:
    """Train on the documents of the parquet `sample` and write `tokenizer.json` to `out`.

    The sample is streamed into the trainer (it keeps word counts, not the text), so memory
    follows the sample's distinct words; time and peak memory are logged."""
    characters = 0

    def batches() -> Iterator[list[str]]:
        nonlocal characters
        batch: list[str] = []
        for text in read_texts(sample):
            batch.append(text)
            characters += len(text)
            if len(batch) == batch_documents:
                yield batch
                batch = []
        if batch:
            yield batch

    started, cpu_started = time.perf_counter(), time.process_time()
    tokenizer = empty_tokenizer()
    tokenizer.train_from_iterator(
        batches(),
        trainer=build_trainer(vocab_size, min_frequency),
        length=pq.ParquetFile(sample).metadata.num_rows,
    )
    learnt = tokenizer.get_vocab_size()
    if learnt != vocab_size:
        raise ValueError(
            f"tokenizer.vocab_sizes: the tokenizer sample ({sample}) supports only {learnt} "
            f"entries with min_frequency={min_frequency}, not V={vocab_size}; use a larger "
            "corpus.tokenizer_sample_characters, a smaller V or a lower tokenizer.min_frequency"
        )
    if tokenizer.token_to_id(END_OF_TEXT) != 0:
        raise RuntimeError(f"{END_OF_TEXT} is not entry 0 of the trained tokenizer")
    with atomic_path(out) as tmp:
        tokenizer.save(str(tmp))
    wall = time.perf_counter() - started
    log.info(
        "tokenizer V=%d trained on %d characters in %.1f s (%.0f characters/s, %.1f cores busy "
        "on average), peak RSS %.0f MiB",
        vocab_size,
        characters,
        wall,
        characters / wall if wall else 0.0,
        (time.process_time() - cpu_started) / wall if wall else 0.0,
        peak_rss_mib(),
    )
    return tokenizer
