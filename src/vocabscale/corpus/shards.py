"""The corpus directory's text files: parquet files of one `text` column, written and read a
row group at a time, so neither the writer nor any reader holds more than one row group.

  train/NNNNN.parquet       training documents, sharded by characters
  validation.parquet        the held-out documents
  tokenizer_sample.parquet  the first characters of the training text
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

#: Documents are written in parquet row groups of about this many characters: readers
#: downstream hold one row group at a time, so this bounds their memory.
ROW_GROUP_CHARACTERS = 4_000_000

_SCHEMA = pa.schema([("text", pa.large_string())])


class TextWriter:
    """A parquet file of documents written incrementally, one row group per
    `ROW_GROUP_CHARACTERS`, so neither this stage nor its readers hold more than that."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = pq.ParquetWriter(path, _SCHEMA)
        self.buffer: list[str] = []
        self.buffered = 0

    def add(self, text: str) -> None:
        self.buffer.append(text)
        self.buffered += len(text)
        if self.buffered >= ROW_GROUP_CHARACTERS:
            self._flush()

    def _flush(self) -> None:
        if self.buffer:
            self.writer.write_table(pa.Table.from_pydict({"text": self.buffer}, schema=_SCHEMA))
            self.buffer, self.buffered = [], 0

    def close(self) -> None:
        self._flush()
        self.writer.close()


@dataclass
class ShardWriter:
    """Training documents in parquet shards of about `shard_characters` each."""

    directory: Path
    shard_characters: int
    current: TextWriter | None = None
    written: int = 0
    shards: int = 0

    def add(self, text: str) -> None:
        if self.current is None:
            self.current = TextWriter(self.directory / f"{self.shards:05d}.parquet")
            self.shards += 1
        self.current.add(text)
        self.written += len(text)
        if self.written >= self.shard_characters:
            self.close()

    def close(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current, self.written = None, 0


def read_texts(path: str | Path) -> Iterator[str]:
    """Documents of one parquet shard written by this stage, in order, a row group at a time."""
    for batch in pq.ParquetFile(path).iter_batches(columns=["text"], batch_size=1024):
        yield from batch.column(0).to_pylist()


def utf8_bytes(path: str | Path) -> int:
    """UTF-8 bytes of the documents of one parquet file, a row group at a time (what bits
    per byte divide by)."""
    total = 0
    for batch in pq.ParquetFile(path).iter_batches(columns=["text"], batch_size=1024):
        total += pc.sum(pc.binary_length(batch.column(0))).as_py() or 0
    return total


def train_shards(corpus_dir: str | Path) -> list[Path]:
    shards = sorted(Path(corpus_dir, "train").glob("*.parquet"))
    if not shards:
        raise FileNotFoundError(f"{corpus_dir}/train: no shards; run prepare-corpus first")
    return shards
