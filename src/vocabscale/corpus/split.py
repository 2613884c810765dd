"""The source corpus read once into the corpus directory (`shards`): each usable document,
unless an exact copy of an earlier one (`duplicates`), sent to its split by a hash of its text,
so that the split does not depend on the order in which a streaming source yields documents."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from vocabscale.corpus.duplicates import SeenDocuments, document_digest
from vocabscale.corpus.shards import ShardWriter, TextWriter
from vocabscale.corpus.sources import (
    BUILTIN_PYTHON_DOCS,
    Item,
    Skip,
    SkipCounter,
    iter_documents,
    problem_with,
)
from vocabscale.io import atomic_dir, write_json

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "tokenizer_sample")


def is_validation(digest: int, fraction: float) -> bool:
    """Deterministic split by document content: its digest as a fraction."""
    return digest / 2**64 < fraction


def usable_document(item: Item, skipped: SkipCounter, limit: int) -> tuple[str, bytes] | None:
    """A source item as (text, its UTF-8 bytes), or None after counting why it is no document
    (the same bound on its size, `limit` bytes, for every kind of source)."""
    if isinstance(item, Skip):
        skipped.add(item)
        return None
    value, prefix, number = item
    problem = problem_with(value)
    if problem is not None:
        skipped.add(Skip(problem[0], f"{prefix}{number}", problem[1]))
        return None
    try:
        data = value.encode("utf-8")
    except UnicodeEncodeError as error:
        reason = f"not valid Unicode at character {error.start}: {error.reason}"
        skipped.add(Skip("non_utf8", f"{prefix}{number}", reason))
        return None
    if len(data) > limit:
        reason = f"{len(data):,} bytes, more than corpus.max_document_bytes = {limit:,}"
        skipped.add(Skip("too_long", f"{prefix}{number}", reason))
        return None
    return value, data


class DocumentSplitter:
    """Sends each document to its split's files and counts documents and characters: to
    validation while its cap allows and the document hashes there, else to train, whose first
    `tokenizer_sample_characters` are also copied, cut to exactly that cap, into the sample."""

    def __init__(self, directory: Path, corpus: dict[str, Any]) -> None:
        self.corpus = corpus
        self.counts = {split: {"documents": 0, "characters": 0} for split in SPLITS}
        self.shards = ShardWriter(directory / "train", corpus["shard_characters"])
        self.validation = TextWriter(directory / "validation.parquet")
        self.sample = TextWriter(directory / "tokenizer_sample.parquet")

    def add(self, text: str, digest: int) -> None:
        counts, corpus = self.counts, self.corpus
        validation_open = counts["validation"]["characters"] < corpus["validation_characters"]
        if validation_open and is_validation(digest, corpus["validation_fraction"]):
            split = "validation"
            self.validation.add(text)
        else:
            split = "train"
            self.shards.add(text)
            sample = counts["tokenizer_sample"]
            room = corpus["tokenizer_sample_characters"] - sample["characters"]
            if room > 0:
                piece = text[:room]
                self.sample.add(piece)
                sample["documents"] += 1
                sample["characters"] += len(piece)
        counts[split]["documents"] += 1
        counts[split]["characters"] += len(text)

    def close(self) -> None:
        self.shards.close()
        self.validation.close()
        self.sample.close()


def check_splits(counts: dict[str, dict[str, int]], skipped: SkipCounter) -> None:
    """Refuse a corpus with an empty train or validation split, saying what was read."""
    for split in ("train", "validation"):
        if not counts[split]["documents"]:
            documents = counts["train"]["documents"] + counts["validation"]["documents"]
            first = "; ".join(f"first {k}: {w}" for k, w in skipped.first.items())
            raise ValueError(
                f"corpus: the {split} split is empty; the source has {documents} usable "
                f"documents and {skipped.summary()} skipped ones"
                + (f" ({first})" if first else "")
                + " (check corpus.source, corpus.text_field and corpus.validation_fraction)"
            )


def prepare_corpus(corpus: dict[str, Any], out_dir: str | Path) -> dict[str, Any]:
    """Run the stage on the `corpus` section of params; returns the stats it wrote."""
    skipped, seen = SkipCounter(), SeenDocuments()
    duplicates = {"documents": 0, "characters": 0}
    max_characters = corpus["max_characters"]
    items = iter_documents(corpus)
    with atomic_dir(out_dir) as tmp:
        writer = DocumentSplitter(tmp, corpus)
        progress = tqdm(
            desc="prepare_corpus", unit=" chars", unit_scale=True, mininterval=2, disable=None
        )
        total = 0
        for item in items:
            document = usable_document(item, skipped, corpus["max_document_bytes"])
            if document is None:
                continue
            if max_characters and total >= max_characters:
                break
            text, data = document
            progress.update(len(text))
            digest = document_digest(data)
            if not seen.add(digest):
                duplicates["documents"] += 1
                duplicates["characters"] += len(text)
                continue
            total += len(text)
            writer.add(text, digest)
        progress.close()
        writer.close()
        check_splits(writer.counts, skipped)
        stats = {
            "source": corpus["source"],
            "splits": writer.counts,
            "train_shards": writer.shards.shards,
            "duplicates": duplicates,
            "skipped": skipped.counts,
            "first_skipped": skipped.first,
        }
        if corpus["source"] == BUILTIN_PYTHON_DOCS:
            stats["python"] = ".".join(map(str, sys.version_info[:3]))
        write_json(tmp / "stats.json", stats)
    counts = writer.counts
    log.info(
        "corpus: %d train documents (%d characters), %d validation documents (%d characters); "
        "%d exact duplicates dropped (%d characters); skipped: %s",
        counts["train"]["documents"],
        counts["train"]["characters"],
        counts["validation"]["documents"],
        counts["validation"]["characters"],
        duplicates["documents"],
        duplicates["characters"],
        skipped.summary(),
    )
    return stats
