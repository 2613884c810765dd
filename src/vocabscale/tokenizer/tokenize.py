"""Stage tokenize: the corpus under one tokenizer, as flat memory-mappable token arrays.

Outputs (one directory per V):
  train.bin, validation.bin   token ids (uint16 when V <= 65536, else uint32); every document is
                              preceded by end-of-text, so every text token is a target
  unigram_counts.npy          int64 count of each id in train.bin (the unigram distribution)
  stats.json                  tokens, documents, characters and the sha256 of the array per
                              split (and the UTF-8 bytes of the validation text, for bits per
                              byte), dtype (training keys its resume state on the digests)

How it runs on corpora of hundreds of GB:
  streaming   documents are read a parquet batch at a time; memory holds a few batches
              (bounded by documents and by characters), never the corpus or the arrays.
  speed       `encode_batch_fast` (the same ids as `encode_batch`, without the character
              offsets nobody here reads) runs on every core of tokenizers' thread pool while a
              reader thread decodes the next batch. Turning encodings into ids and appending
              them is cheap (about 2% of the encoding) and stays on the main thread: a writer
              thread overlapping it cost more CPU in GIL hand-offs than it saved (measured,
              see benchmarks/bench_tokenize.py).
  resumable   the work happens in `.<out name>.partial/` beside the output. A checkpoint
              (progress.json) says how far the input has been read and how many bytes of the
              arrays hold it; it is written only after those bytes are flushed and synced. A
              rerun after a crash or a kill checks that corpus and tokenizer are unchanged,
              cuts the arrays back to the checkpoint and goes on from there. Each document is
              encoded on its own, so the arrays do not depend on where the run stopped:
              they are byte-identical to those of an uninterrupted run.
The unigram counts and each array's sha256 are computed batch by batch as the arrays are
written; a resumed run reads the part of the array it keeps back from the file first, so counts
and digest always agree with it.

In parallel jobs (tokenizer.tokenize_jobs > 1, under Snakemake): `--part k` tokenizes a
contiguous group of the training shards into a part directory (resumable in the same way),
`--parts DIR...` checks every part and gathers them, with the validation split it tokenizes
itself, into the directory the one job writes, byte for byte (docs/design.md, On a cluster).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import logging
import os
import queue
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow
import pyarrow.parquet as pq
import tokenizers
from tokenizers import Encoding, Tokenizer
from tqdm import tqdm

from vocabscale.config import add_params_argument, load_params
from vocabscale.corpus import shards
from vocabscale.corpus.shards import train_shards, utf8_bytes
from vocabscale.io import (
    TOKEN_SPLITS,
    output_lock,
    publish_dir,
    read_json,
    token_dtype,
    write_json,
)
from vocabscale.tokenizer import bpe
from vocabscale.tokenizer.bpe import END_OF_TEXT, check_parallelism, set_threads

log = logging.getLogger(__name__)

#: Layout version of the partial work directory; a change discards old partial work.
PARTIAL_FORMAT = 2
_READ_ROWS = 1024


# --- reading ------------------------------------------------------------------------------


@dataclass
class Batch:
    """Documents to encode together, and where the input stands after them."""

    texts: list[str]
    characters: int
    position: tuple[int, int]  # (file index, row) of the next unread document


def read_batches(
    paths: list[Path],
    start: tuple[int, int],
    batch_documents: int,
    batch_characters: int,
) -> Iterator[Batch]:
    """Documents of parquet `paths` from `start` on, in batches of at most `batch_documents`
    documents or (one document more than) `batch_characters` characters. Row groups wholly
    before `start` are not read."""
    texts: list[str] = []
    characters = 0
    row = 0
    index = start[0]
    for index in range(start[0], len(paths)):
        parquet = pq.ParquetFile(paths[index])
        skip = start[1] if index == start[0] else 0
        first, row = 0, 0
        while (
            first < parquet.num_row_groups
            and row + parquet.metadata.row_group(first).num_rows <= skip
        ):
            row += parquet.metadata.row_group(first).num_rows
            first += 1
        groups = list(range(first, parquet.num_row_groups))
        if not groups:
            continue
        for record_batch in parquet.iter_batches(
            batch_size=_READ_ROWS, row_groups=groups, columns=["text"]
        ):
            values = record_batch.column(0).to_pylist()
            if row < skip:
                drop = min(skip - row, len(values))
                values = values[drop:]
                row += drop
            for text in values:
                texts.append(text)
                characters += len(text)
                row += 1
                if len(texts) >= batch_documents or characters >= batch_characters:
                    yield Batch(texts, characters, (index, row))
                    texts, characters = [], 0
    if texts:
        yield Batch(texts, characters, (index, row))


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class Prefetch:
    """Run an iterator in a background thread, at most `depth` items ahead of the consumer
    (pyarrow decodes without the GIL, so reading overlaps the encoding)."""

    _DONE = object()

    def __init__(self, iterator: Iterator[Any], depth: int = 2) -> None:
        self._queue: queue.Queue = queue.Queue(depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(iterator,), name="tokenize-reader", daemon=True
        )
        self._thread.start()

    def _run(self, iterator: Iterator[Any]) -> None:
        try:
            for item in iterator:
                if not self._put(item):
                    return
            self._put(self._DONE)
        except BaseException as error:
            self._put(_Failure(error))

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[Any]:
        while True:
            item = self._queue.get()
            if item is self._DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item

    def __enter__(self) -> Prefetch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


# --- writing and checkpoints --------------------------------------------------------------


@dataclass
class Progress:
    """The checkpoint: finished splits, and how far the split in progress has got."""

    fingerprint: str
    done: dict[str, dict[str, Any]] = field(default_factory=dict)
    split: str = TOKEN_SPLITS[0]
    position: tuple[int, int] = (0, 0)
    bytes: int = 0
    documents: int = 0
    characters: int = 0

    @classmethod
    def load(cls, path: Path) -> Progress | None:
        try:
            data = json.loads(path.read_text())
            data["position"] = tuple(data["position"])
            return cls(**data)
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def save(self, path: Path) -> None:
        write_json(path, asdict(self))


def encode(tokenizer: Tokenizer, texts: list[str]) -> list[Encoding]:
    """One batch through the tokenizer, on every core of its pool."""
    return tokenizer.encode_batch_fast(texts, add_special_tokens=False)


class SplitWriter:
    """Appends encoded batches to one token array, in order, and checkpoints every
    `checkpoint_seconds`."""

    def __init__(
        self,
        out: BinaryIO,
        dtype: np.dtype,
        end_of_text: int,
        progress: Progress,
        progress_path: Path,
        checkpoint_seconds: float,
        bar: tqdm,
        digest: hashlib._Hash,
        counts: np.ndarray | None = None,
    ) -> None:
        self.out = out
        self.digest = digest
        self.counts = counts
        self.dtype = dtype
        self.end_of_text = (end_of_text,)
        self.progress = progress
        self.progress_path = progress_path
        self.checkpoint_seconds = checkpoint_seconds
        self.bar = bar
        self.last_checkpoint = time.monotonic()

    def write(self, batch: Batch, encodings: list[Encoding]) -> None:
        count = len(encodings) + sum(map(len, encodings))
        flat = itertools.chain.from_iterable(
            itertools.chain(self.end_of_text, encoding.ids) for encoding in encodings
        )
        ids = np.fromiter(flat, dtype=self.dtype, count=count)
        self.out.write(memoryview(ids))
        self.digest.update(memoryview(ids))
        if self.counts is not None:
            _add_counts(self.counts, ids)
        progress = self.progress
        progress.bytes += ids.nbytes
        progress.documents += len(batch.texts)
        progress.characters += batch.characters
        progress.position = batch.position
        self.bar.update(batch.characters)
        if time.monotonic() - self.last_checkpoint >= self.checkpoint_seconds:
            self.checkpoint()

    def checkpoint(self) -> None:
        """Make the bytes durable first, then record them: a checkpoint never claims more than
        the array holds."""
        self.out.flush()
        os.fsync(self.out.fileno())
        self.progress.save(self.progress_path)
        self.last_checkpoint = time.monotonic()


def _fingerprint(inputs: list[Path], tokenizer_path: Path) -> str:
    """What the partial work depends on: the code that reads and encodes (this module and the
    two it takes from), the versions of the libraries that do it, the tokenizer file, and each
    input file's name, size and parquet footer (row groups, row counts, column statistics).
    Cheap on any corpus size."""
    digest = hashlib.sha256(f"partial format {PARTIAL_FORMAT}\n".encode())
    for module in (__file__, bpe.__file__, shards.__file__):
        digest.update(Path(module).read_bytes())
    versions = (tokenizers.__version__, pyarrow.__version__, np.__version__)
    digest.update("tokenizers {} pyarrow {} numpy {}\n".format(*versions).encode())
    digest.update(tokenizer_path.read_bytes())
    for path in inputs:
        size = path.stat().st_size
        with open(path, "rb") as stream:
            stream.seek(-8, os.SEEK_END)
            footer_length = int.from_bytes(stream.read(4), "little")
            stream.seek(-8 - footer_length, os.SEEK_END)
            footer = stream.read(footer_length)
        digest.update(f"{path.name} {size}\n".encode())
        digest.update(footer)
    return digest.hexdigest()


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _open_work(work: Path, fingerprint: str, itemsize: int) -> Progress:
    """The checkpoint to go on from, or a fresh start when there is none that fits."""
    progress_path = work / "progress.json"
    if work.exists():
        progress = Progress.load(progress_path)
        problem = None
        if progress is None:
            problem = "no readable checkpoint"
        elif progress.fingerprint != fingerprint:
            problem = "the corpus, the tokenizer, this code or a library version changed since"
        else:
            for split, stats in progress.done.items():
                if _size(work / f"{split}.bin") != stats["tokens"] * itemsize:
                    problem = f"{split}.bin does not match its checkpoint"
            if "train" in progress.done and not (work / "unigram_counts.npy").exists():
                problem = "the unigram counts of train.bin are missing"
            current = progress.split
            if current not in progress.done and _size(work / f"{current}.bin") < progress.bytes:
                problem = f"{current}.bin is shorter than its checkpoint"
        if problem is None:
            assert progress is not None
            log.info(
                "resuming partial work in %s: %s done, %s from file %d row %d (%d documents)",
                work,
                ", ".join(progress.done) or "no split",
                progress.split,
                *progress.position,
                progress.documents,
            )
            return progress
        log.warning("discarding partial work in %s: %s", work, problem)
        shutil.rmtree(work)
    work.mkdir(parents=True)
    progress = Progress(fingerprint)
    progress.save(progress_path)
    return progress


def _add_counts(counts: np.ndarray, ids: np.ndarray) -> None:
    found = np.bincount(ids, minlength=len(counts))
    if len(found) > len(counts):
        raise ValueError(f"token id {len(found) - 1} is beyond V={len(counts)}")
    counts += found


def read_back(
    path: Path, dtype: np.dtype, limit: int, digest: hashlib._Hash, counts: np.ndarray | None
) -> None:
    """Feed the first `limit` bytes of a token array to `digest` and, when given, add the count
    of every id in them to `counts`; read in chunks (not memory-mapped: mapped pages would count
    as resident memory for the whole file)."""
    chunk = (1 << 22) * dtype.itemsize
    with open(path, "rb") as stream:
        for start in range(0, limit, chunk):
            data = stream.read(min(chunk, limit - start))
            digest.update(data)
            if counts is not None:
                _add_counts(counts, np.frombuffer(data, dtype=dtype))


# --- the stage ----------------------------------------------------------------------------


def _tokenize_split(
    tokenizer: Tokenizer,
    split: str,
    paths: list[Path],
    work: Path,
    progress: Progress,
    batch_documents: int,
    batch_characters: int,
    checkpoint_seconds: float,
    total_characters: int | None,
    counts: np.ndarray | None,
) -> None:
    dtype = token_dtype(tokenizer.get_vocab_size())
    path = work / f"{split}.bin"
    if progress.split != split:
        progress.split, progress.position, progress.bytes = split, (0, 0), 0
        progress.documents = progress.characters = 0
    digest = hashlib.sha256()
    if progress.bytes:  # resuming: the part of the array that is kept
        read_back(path, dtype, progress.bytes, digest, counts)
    bar = tqdm(
        desc=f"tokenize V={tokenizer.get_vocab_size()} {split}",
        total=total_characters,
        initial=progress.characters,
        unit=" chars",
        unit_scale=True,
        mininterval=2,
        disable=None,  # only on a terminal
    )
    with open(path, "r+b" if path.exists() else "wb") as out:
        out.truncate(progress.bytes)  # anything after the checkpoint is redone
        out.seek(progress.bytes)
        writer = SplitWriter(
            out,
            dtype,
            tokenizer.token_to_id(END_OF_TEXT),
            progress,
            work / "progress.json",
            checkpoint_seconds,
            bar,
            digest,
            counts,
        )
        batches = read_batches(paths, progress.position, batch_documents, batch_characters)
        with Prefetch(batches) as prefetched:
            for batch in prefetched:
                writer.write(batch, encode(tokenizer, batch.texts))
        bar.close()
        if counts is not None:  # saved before the checkpoint that says the split is done
            np.save(work / "unigram_counts.npy", counts)
        progress.done[split] = {
            "documents": progress.documents,
            "characters": progress.characters,
            "tokens": progress.bytes // dtype.itemsize,
            "sha256": digest.hexdigest(),
        }
        writer.checkpoint()


def _load_tokenizer(path: Path) -> Tokenizer:
    tokenizer = Tokenizer.from_file(str(path))
    if tokenizer.token_to_id(END_OF_TEXT) != 0:
        raise ValueError(f"{path}: {END_OF_TEXT} is not entry 0; retrain the tokenizer")
    return tokenizer


def _work_dir(out_dir: Path) -> Path:
    return out_dir.parent / f".{out_dir.name}.partial"


def _tokenize_splits(
    tokenizer: Tokenizer,
    tokenizer_path: Path,
    inputs: dict[str, list[Path]],
    work: Path,
    totals: dict[str, int],
    batch_documents: int,
    batch_characters: int,
    checkpoint_seconds: float,
) -> Progress:
    """Tokenize the splits of `inputs` (split -> parquet files) into `work`, going on from its
    checkpoint, and log the throughput; returns the checkpoint with every split done."""
    vocab_size = tokenizer.get_vocab_size()
    dtype = token_dtype(vocab_size)
    fingerprint = _fingerprint(
        [path for paths in inputs.values() for path in paths], tokenizer_path
    )
    progress = _open_work(work, fingerprint, dtype.itemsize)
    if "train" in progress.done:
        counts = np.load(work / "unigram_counts.npy")
    else:
        counts = np.zeros(vocab_size, dtype=np.int64)
    check_parallelism()
    started, cpu_started = time.perf_counter(), time.process_time()
    characters_before = sum(s["characters"] for s in progress.done.values())
    characters_before += progress.characters if progress.split not in progress.done else 0
    for split, paths in inputs.items():
        if split not in progress.done:
            _tokenize_split(
                tokenizer,
                split,
                paths,
                work,
                progress,
                batch_documents,
                batch_characters,
                checkpoint_seconds,
                totals.get(split),
                counts if split == "train" else None,
            )
    characters = sum(s["characters"] for s in progress.done.values()) - characters_before
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


def _corpus_characters(corpus_dir: Path) -> dict[str, int]:
    """Characters of each split, for the progress bars (absent before prepare-corpus wrote
    them)."""
    path = corpus_dir / "stats.json"
    splits = read_json(path)["splits"] if path.exists() else {}
    return {split: stats["characters"] for split, stats in splits.items()}


def _publish_tokens(
    work: Path, out_dir: Path, done: dict[str, dict[str, Any]], validation: Path, vocab_size: int
) -> dict[str, Any]:
    """Write stats.json beside the finished arrays and publish the directory."""
    stats: dict[str, Any] = {"vocab_size": vocab_size, "dtype": token_dtype(vocab_size).name}
    stats["splits"] = {split: done[split] for split in TOKEN_SPLITS}
    stats["splits"]["validation"]["utf8_bytes"] = utf8_bytes(validation)
    train = stats["splits"]["train"]
    stats["tokens_per_character"] = train["tokens"] / train["characters"]
    write_json(work / "stats.json", stats)
    (work / "progress.json").unlink(missing_ok=True)
    publish_dir(work, out_dir)
    return stats


def tokenize_corpus(
    corpus_dir: str | Path,
    tokenizer_path: str | Path,
    out_dir: str | Path,
    batch_documents: int,
    batch_characters: int,
    checkpoint_seconds: float,
) -> dict[str, Any]:
    """Run the stage in one job (resuming partial work of an earlier run); returns the stats it
    wrote."""
    corpus_dir, out_dir, tokenizer_path = Path(corpus_dir), Path(out_dir), Path(tokenizer_path)
    tokenizer = _load_tokenizer(tokenizer_path)
    validation = corpus_dir / "validation.parquet"
    inputs = {"train": train_shards(corpus_dir), "validation": [validation]}
    work = _work_dir(out_dir)
    totals = _corpus_characters(corpus_dir)
    batching = (batch_documents, batch_characters, checkpoint_seconds)
    progress = _tokenize_splits(tokenizer, tokenizer_path, inputs, work, totals, *batching)
    vocab_size = tokenizer.get_vocab_size()
    stats = _publish_tokens(work, out_dir, progress.done, validation, vocab_size)
    log.info(
        "V=%d: %d train tokens, %.4f tokens per character",
        vocab_size,
        stats["splits"]["train"]["tokens"],
        stats["tokens_per_character"],
    )
    return stats


# --- the stage as parallel jobs: parts of the training shards, then a gather ---------------


def part_shards(shards: list[Path], part: int, parts: int) -> list[Path]:
    """Part `part` (from 0) of `parts`: a contiguous group of the training shards, their
    counts differing by one at most (prepare-corpus writes shards of equal characters)."""
    return shards[part * len(shards) // parts : (part + 1) * len(shards) // parts]


def _sha256_file(path: Path) -> str:
    with open(path, "rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def tokenize_part(
    corpus_dir: str | Path,
    tokenizer_path: str | Path,
    out_dir: str | Path,
    part: int,
    parts: int,
    batch_documents: int,
    batch_characters: int,
    checkpoint_seconds: float,
) -> dict[str, Any]:
    """Tokenize part `part` (from 0) of `parts` of the training shards into
    `out_dir` (train.bin, unigram_counts.npy and part.json, which says what it was made of);
    returns part.json. Resumable like the one job."""
    corpus_dir, out_dir, tokenizer_path = Path(corpus_dir), Path(out_dir), Path(tokenizer_path)
    if not 0 <= part < parts:
        raise ValueError(
            f"part {part}: tokenizer.tokenize_jobs is {parts}, parts are 0 to {parts - 1}"
        )
    shards = part_shards(train_shards(corpus_dir), part, parts)
    if not shards:
        log.warning(
            "part %d of %d has no shard: the corpus has fewer shards than parts", part, parts
        )
    work = _work_dir(out_dir)
    batching = (batch_documents, batch_characters, checkpoint_seconds)
    tokenizer = _load_tokenizer(tokenizer_path)
    progress = _tokenize_splits(tokenizer, tokenizer_path, {"train": shards}, work, {}, *batching)
    record = {
        "part": part,
        "parts": parts,
        "shards": [path.name for path in shards],
        "fingerprint": progress.fingerprint,
        "tokenizer_sha256": _sha256_file(tokenizer_path),
        **progress.done["train"],
    }
    write_json(work / "part.json", record)
    (work / "progress.json").unlink()
    publish_dir(work, out_dir)
    return record


def _check_part(
    directory: Path, part: int, parts: int, shards: list[Path], tokenizer_path: Path, itemsize: int
) -> dict[str, Any]:
    """part.json of a part, checked to be part `part` of `parts` of these shards, made by this
    tokenizer and this code, its array complete; a clear error naming the file otherwise."""
    path = directory / "part.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; part {part} of {parts} is not tokenized")
    record = read_json(path)
    if record["tokenizer_sha256"] != _sha256_file(tokenizer_path):
        raise ValueError(
            f"{path}: the part was tokenized with another tokenizer than {tokenizer_path}"
        )
    if (record["part"], record["parts"]) != (part, parts):
        raise ValueError(
            f"{path}: part {record['part']} of {record['parts']}, given as part {part} of {parts}"
        )
    group = part_shards(shards, part, parts)
    if record["fingerprint"] != _fingerprint(group, tokenizer_path):
        raise ValueError(
            f"{path}: made from other training shards ({', '.join(record['shards']) or 'none'}) "
            "or by other code than this corpus and this version of vocabscale hold; "
            "tokenize the part again"
        )
    array = directory / "train.bin"
    if _size(array) != record["tokens"] * itemsize:
        raise ValueError(f"{array}: not the {record['tokens']} tokens {path} records")
    return record


def _concatenate(
    part_dirs: list[Path], records: list[dict[str, Any]], out: Path, vocab_size: int
) -> dict[str, Any]:
    """The parts' arrays one after the other into `out`, each checked against its digest on
    the way; their unigram counts added. Returns the train split's stats."""
    digest, counts = hashlib.sha256(), np.zeros(vocab_size, dtype=np.int64)
    chunk = 1 << 24
    with open(out, "wb") as stream:
        for directory, record in zip(part_dirs, records):
            part_digest = hashlib.sha256()
            with open(directory / "train.bin", "rb") as part:
                while data := part.read(chunk):
                    stream.write(data)
                    digest.update(data)
                    part_digest.update(data)
            if part_digest.hexdigest() != record["sha256"]:
                raise ValueError(f"{directory / 'train.bin'}: changed since its part.json")
            part_counts = np.load(directory / "unigram_counts.npy")
            if part_counts.shape != counts.shape:
                raise ValueError(f"{directory / 'unigram_counts.npy'}: not {vocab_size} counts")
            counts += part_counts
    np.save(out.parent / "unigram_counts.npy", counts)
    return {
        "documents": sum(record["documents"] for record in records),
        "characters": sum(record["characters"] for record in records),
        "tokens": sum(record["tokens"] for record in records),
        "sha256": digest.hexdigest(),
    }


def gather_parts(
    corpus_dir: str | Path,
    tokenizer_path: str | Path,
    part_dirs: list[str | Path],
    out_dir: str | Path,
    batch_documents: int,
    batch_characters: int,
    checkpoint_seconds: float,
) -> dict[str, Any]:
    """The token directory of the one job, from the parts (every part checked before anything
    is written) and the validation split, tokenized here; returns the stats it wrote."""
    corpus_dir, out_dir, tokenizer_path = Path(corpus_dir), Path(out_dir), Path(tokenizer_path)
    part_dirs = [Path(directory) for directory in part_dirs]
    tokenizer = _load_tokenizer(tokenizer_path)
    vocab_size = tokenizer.get_vocab_size()
    itemsize = token_dtype(vocab_size).itemsize
    shards = train_shards(corpus_dir)
    records = [
        _check_part(directory, part, len(part_dirs), shards, tokenizer_path, itemsize)
        for part, directory in enumerate(part_dirs)
    ]
    validation = corpus_dir / "validation.parquet"
    work = _work_dir(out_dir)
    totals = _corpus_characters(corpus_dir)
    batching = (batch_documents, batch_characters, checkpoint_seconds)
    inputs = {"validation": [validation]}
    progress = _tokenize_splits(tokenizer, tokenizer_path, inputs, work, totals, *batching)
    started = time.perf_counter()
    train = _concatenate(part_dirs, records, work / "train.bin", vocab_size)
    done = {**progress.done, "train": train}
    stats = _publish_tokens(work, out_dir, done, validation, vocab_size)
    log.info(
        "V=%d: %d parts gathered, %d train tokens, in %.1f s",
        vocab_size,
        len(part_dirs),
        train["tokens"],
        time.perf_counter() - started,
    )
    return stats


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
    batching = [section[key] for key in ("batch_documents", "batch_characters")]
    batching.append(section["checkpoint_seconds"])
    set_threads(args.threads)
    with output_lock(args.out):  # and so its partial work, named after it
        if args.part is not None:
            parts = section["tokenize_jobs"]
            tokenize_part(args.corpus, args.tokenizer, args.out, args.part, parts, *batching)
        elif args.parts:
            gather_parts(args.corpus, args.tokenizer, args.parts, args.out, *batching)
        else:
            tokenize_corpus(args.corpus, args.tokenizer, args.out, *batching)
