"""How the tokenize stage reads the corpus: documents of parquet files in batches, from any
(file, row) position, so that a resumed run reads on from where its checkpoint stands."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

_READ_ROWS = 1024


@dataclass(frozen=True)
class Batching:
    """How much the tokenize stage reads and encodes at once, and how often it records where
    it stands. They bound memory and the work a kill loses, nothing else: the token arrays are
    the same bytes whatever their values."""

    batch_documents: int
    batch_characters: int
    checkpoint_seconds: float

    @classmethod
    def from_params(cls, tokenizer: dict[str, Any]) -> Batching:
        """From the validated `tokenizer` section of params."""
        return cls(
            tokenizer["batch_documents"],
            tokenizer["batch_characters"],
            tokenizer["checkpoint_seconds"],
        )


@dataclass
class Batch:
    """Documents to encode together, and where the input stands after them."""

    texts: list[str]
    characters: int
    position: tuple[int, int]  # (file index, row) of the next unread document


def _first_row_group(parquet: pq.ParquetFile, skip: int) -> tuple[int, int]:
    """The first row group holding row `skip` or later, and the row it starts at."""
    first, row = 0, 0
    while (
        first < parquet.num_row_groups and row + parquet.metadata.row_group(first).num_rows <= skip
    ):
        row += parquet.metadata.row_group(first).num_rows
        first += 1
    return first, row


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
        first, row = _first_row_group(parquet, skip)
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
