"""Stage train_tokenizer: a byte-level BPE (HF `tokenizers`) with exactly V entries.

Entry 0 is the end-of-text token, then the 256 byte symbols, then V - 257 merges learnt from
the corpus's tokenizer sample. Training is deterministic for a given sample.
"""

from __future__ import annotations

import logging
import resource
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from vocabscale.config import END_OF_TEXT
from vocabscale.io import atomic_path
from vocabscale.prepare_corpus import read_texts

log = logging.getLogger(__name__)


def build_trainer(vocab_size: int, min_frequency: int) -> trainers.BpeTrainer:
    return trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=True,
    )


def empty_tokenizer() -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def train_tokenizer(
    sample: str | Path,
    vocab_size: int,
    out: str | Path,
    min_frequency: int = 2,
    batch_documents: int = 1000,
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
