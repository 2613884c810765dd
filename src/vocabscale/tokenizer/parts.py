"""The tokenize stage as parallel jobs (tokenizer.tokenize_jobs > 1, under Snakemake): parts of
the training shards tokenized apart, then gathered, with the validation split, into the very
bytes the one job writes (docs/design.md, On a cluster)."""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from vocabscale.corpus.shards import train_shards
from vocabscale.io import publish_dir, read_json, token_dtype, write_json
from vocabscale.tokenizer.arrays import load_tokenizer, tokenize_splits
from vocabscale.tokenizer.batching import Batching
from vocabscale.tokenizer.one_job import corpus_characters, publish_tokens
from vocabscale.tokenizer.resume import (
    PROGRESS,
    file_size,
    fingerprint,
    partial_dir,
    save_counts,
)

log = logging.getLogger(__name__)


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
    batching: Batching,
) -> dict[str, Any]:
    """Tokenize part `part` (from 0) of `parts` of the training shards into `out_dir`
    (train.bin, unigram_counts.npy and part.json, which says what it was made of); returns
    part.json. Resumable like the one job."""
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
    work = partial_dir(out_dir)
    tokenizer = load_tokenizer(tokenizer_path)
    progress = tokenize_splits(tokenizer, tokenizer_path, {"train": shards}, work, {}, batching)
    record = {
        "part": part,
        "parts": parts,
        "shards": [path.name for path in shards],
        "fingerprint": progress.fingerprint,
        "tokenizer_sha256": _sha256_file(tokenizer_path),
        **progress.done["train"],
    }
    write_json(work / "part.json", record)
    publish_dir(work, out_dir, leave=[PROGRESS])  # the record stays until all is synced
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
    if record["fingerprint"] != fingerprint(group, tokenizer_path):
        raise ValueError(
            f"{path}: made from other training shards ({', '.join(record['shards']) or 'none'}) "
            "or by other code than this corpus and this version of vocabscale hold; "
            "tokenize the part again"
        )
    array = directory / "train.bin"
    if file_size(array) != record["tokens"] * itemsize:
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
    save_counts(out.parent, counts)
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
    batching: Batching,
) -> dict[str, Any]:
    """The token directory of the one job, from the parts (every part checked before anything
    is written) and the validation split, tokenized here; returns the stats it wrote."""
    corpus_dir, out_dir, tokenizer_path = Path(corpus_dir), Path(out_dir), Path(tokenizer_path)
    part_dirs = [Path(directory) for directory in part_dirs]
    tokenizer = load_tokenizer(tokenizer_path)
    vocab_size = tokenizer.get_vocab_size()
    itemsize = token_dtype(vocab_size).itemsize
    shards = train_shards(corpus_dir)
    records = [
        _check_part(directory, part, len(part_dirs), shards, tokenizer_path, itemsize)
        for part, directory in enumerate(part_dirs)
    ]
    validation = corpus_dir / "validation.parquet"
    work = partial_dir(out_dir)
    totals = corpus_characters(corpus_dir)
    inputs = {"validation": [validation]}
    progress = tokenize_splits(tokenizer, tokenizer_path, inputs, work, totals, batching)
    started = time.perf_counter()
    train = _concatenate(part_dirs, records, work / "train.bin", vocab_size)
    done = {**progress.done, "train": train}
    stats = publish_tokens(work, out_dir, done, validation, vocab_size)
    log.info(
        "V=%d: %d parts gathered, %d train tokens, in %.1f s",
        vocab_size,
        len(part_dirs),
        train["tokens"],
        time.perf_counter() - started,
    )
    return stats
