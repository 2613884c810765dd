"""Splits of the corpus encoded into flat token arrays in a partial directory, going on from its
progress record: what every mode of the tokenize stage runs. Each document is encoded on its
own, after an end-of-text token, so the arrays depend neither on the batches nor on where an
earlier run stopped."""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import time
from pathlib import Path
from typing import BinaryIO

import numpy as np
from tokenizers import Encoding, Tokenizer
from tqdm import tqdm

from vocabscale.io import token_dtype
from vocabscale.tokenizer.batching import Batch, Batching, read_batches
from vocabscale.tokenizer.bpe import END_OF_TEXT, check_parallelism
from vocabscale.tokenizer.prefetch import Prefetch
from vocabscale.tokenizer.resume import (
    Progress,
    fingerprint,
    load_counts,
    open_partial,
    save_counts,
)

log = logging.getLogger(__name__)


def load_tokenizer(path: Path) -> Tokenizer:
    tokenizer = Tokenizer.from_file(str(path))
    if tokenizer.token_to_id(END_OF_TEXT) != 0:
        raise ValueError(f"{path}: {END_OF_TEXT} is not entry 0; retrain the tokenizer")
    return tokenizer


def encode(tokenizer: Tokenizer, texts: list[str]) -> list[Encoding]:
    """One batch through the tokenizer, on every core of its pool (`encode_batch_fast`: the
    ids of `encode_batch` without the character offsets, which nobody here reads)."""
    return tokenizer.encode_batch_fast(texts, add_special_tokens=False)


def token_ids(encodings: list[Encoding], dtype: np.dtype, end_of_text: int) -> np.ndarray:
    """The ids of a batch's documents, one after the other, each after `end_of_text`."""
    count = len(encodings) + sum(map(len, encodings))
    separator = (end_of_text,)
    flat = itertools.chain.from_iterable(
        itertools.chain(separator, encoding.ids) for encoding in encodings
    )
    return np.fromiter(flat, dtype=dtype, count=count)


def add_counts(counts: np.ndarray, ids: np.ndarray) -> None:
    found = np.bincount(ids, minlength=len(counts))
    if len(found) > len(counts):
        raise ValueError(f"token id {len(found) - 1} is beyond V={len(counts)}")
    counts += found


class ArrayTally:
    """The running sha256 of a token array and, when given `counts` (the training split's),
    the count of every id in it: both computed as the array is written, so that they always
    agree with it."""

    def __init__(self, counts: np.ndarray | None) -> None:
        self.digest = hashlib.sha256()
        self.counts = counts

    def add(self, ids: np.ndarray) -> None:
        self.digest.update(memoryview(ids))
        if self.counts is not None:
            add_counts(self.counts, ids)

    def read_back(self, path: Path, dtype: np.dtype, limit: int) -> None:
        """Add the first `limit` bytes of the array at `path`, the part a resumed run keeps;
        read in chunks (memory-mapped pages would count as resident memory for the whole
        file)."""
        chunk = (1 << 22) * dtype.itemsize
        with open(path, "rb") as stream:
            for start in range(0, limit, chunk):
                self.add(np.frombuffer(stream.read(min(chunk, limit - start)), dtype=dtype))


class SplitWriter:
    """Appends batches of ids to one token array, in order, and saves the progress record
    every `checkpoint_seconds`."""

    def __init__(
        self,
        out: BinaryIO,
        tally: ArrayTally,
        progress: Progress,
        progress_path: Path,
        checkpoint_seconds: float,
    ) -> None:
        self.out = out
        self.tally = tally
        self.progress = progress
        self.progress_path = progress_path
        self.checkpoint_seconds = checkpoint_seconds
        self.last_checkpoint = time.monotonic()

    def write(self, batch: Batch, ids: np.ndarray) -> None:
        self.out.write(memoryview(ids))
        self.tally.add(ids)
        progress = self.progress
        progress.bytes += ids.nbytes
        progress.documents += len(batch.texts)
        progress.characters += batch.characters
        progress.position = batch.position
        if time.monotonic() - self.last_checkpoint >= self.checkpoint_seconds:
            self.checkpoint()

    def checkpoint(self) -> None:
        """Make the bytes durable first, then record them: a checkpoint never claims more than
        the array holds."""
        self.out.flush()
        os.fsync(self.out.fileno())
        self.progress.save(self.progress_path)
        self.last_checkpoint = time.monotonic()


class SplitEncoder:
    """Encodes splits into the partial directory `work`, each from where `progress` stands."""

    def __init__(
        self, tokenizer: Tokenizer, work: Path, progress: Progress, batching: Batching
    ) -> None:
        self.tokenizer = tokenizer
        self.work = work
        self.progress = progress
        self.batching = batching
        self.dtype = token_dtype(tokenizer.get_vocab_size())
        self.end_of_text = tokenizer.token_to_id(END_OF_TEXT)

    def encode_split(
        self, split: str, paths: list[Path], total_characters: int | None, counts: np.ndarray | None
    ) -> None:
        """Encode the documents of `paths` into `<split>.bin`, adding each id to `counts` when
        given, and record the split as done."""
        progress, path = self.progress, self.work / f"{split}.bin"
        if progress.split != split:
            progress.split, progress.position, progress.bytes = split, (0, 0), 0
            progress.documents = progress.characters = 0
        tally = ArrayTally(counts)
        if progress.bytes:  # resuming: the part of the array that is kept
            tally.read_back(path, self.dtype, progress.bytes)
        with open(path, "r+b" if path.exists() else "wb") as out:
            out.truncate(progress.bytes)  # anything after the checkpoint is redone
            out.seek(progress.bytes)
            checkpoint_seconds = self.batching.checkpoint_seconds
            writer = SplitWriter(
                out, tally, progress, self.work / "progress.json", checkpoint_seconds
            )
            self._encode_batches(split, paths, writer, total_characters)
            if counts is not None:  # durable before the checkpoint that says the split is done
                save_counts(self.work, counts)
            progress.done[split] = {
                "documents": progress.documents,
                "characters": progress.characters,
                "tokens": progress.bytes // self.dtype.itemsize,
                "sha256": tally.digest.hexdigest(),
            }
            writer.checkpoint()

    def _encode_batches(
        self, split: str, paths: list[Path], writer: SplitWriter, total_characters: int | None
    ) -> None:
        """Read on from the recorded position, encode and write, a batch at a time."""
        bar = tqdm(
            desc=f"tokenize V={self.tokenizer.get_vocab_size()} {split}",
            total=total_characters,
            initial=self.progress.characters,
            unit=" chars",
            unit_scale=True,
            mininterval=2,
            disable=None,  # only on a terminal
        )
        batching = self.batching
        batches = read_batches(
            paths, self.progress.position, batching.batch_documents, batching.batch_characters
        )
        with Prefetch(batches) as prefetched:
            for batch in prefetched:
                encodings = encode(self.tokenizer, batch.texts)
                writer.write(batch, token_ids(encodings, self.dtype, self.end_of_text))
                bar.update(batch.characters)
        bar.close()


def _characters_done(progress: Progress) -> int:
    """Characters of the input that the arrays hold."""
    characters = sum(stats["characters"] for stats in progress.done.values())
    return characters + (progress.characters if progress.split not in progress.done else 0)


def tokenize_splits(
    tokenizer: Tokenizer,
    tokenizer_path: Path,
    inputs: dict[str, list[Path]],
    work: Path,
    totals: dict[str, int],
    batching: Batching,
) -> Progress:
    """Tokenize the splits of `inputs` (split -> parquet files) into `work`, going on from its
    progress record, and log the throughput; returns the record with every split done.
    `totals` are the characters of each split, for the progress bars."""
    vocab_size = tokenizer.get_vocab_size()
    inputs_fingerprint = fingerprint(
        [path for paths in inputs.values() for path in paths], tokenizer_path
    )
    progress = open_partial(work, inputs_fingerprint, token_dtype(vocab_size).itemsize)
    if "train" in progress.done:
        counts = load_counts(work, vocab_size)
    else:
        counts = np.zeros(vocab_size, dtype=np.int64)
    check_parallelism()
    started, cpu_started = time.perf_counter(), time.process_time()
    characters_before = _characters_done(progress)
    encoder = SplitEncoder(tokenizer, work, progress, batching)
    for split, paths in inputs.items():
        if split not in progress.done:
            split_counts = counts if split == "train" else None
            encoder.encode_split(split, paths, totals.get(split), split_counts)
    characters = _characters_done(progress) - characters_before
    wall = time.perf_counter() - started
    log.info(
        "V=%d, %s: %d characters tokenized in %.1f s (%.0f characters/s, %.1f cores busy on "
        "average)",
        vocab_size,
        " and ".join(inputs),
        characters,
        wall,
        characters / wall if wall else 0.0,
        (time.process_time() - cpu_started) / wall if wall else 0.0,
    )
    return progress
