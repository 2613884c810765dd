"""Stage prepare_corpus: read the source corpus once, split it by document, write text shards.

Outputs (one directory):
  train/NNNNN.parquet       training documents (column `text`), sharded by characters
  validation.parquet        the held-out documents: the fixed evaluation text of every run
  tokenizer_sample.parquet  the first `tokenizer_sample_characters` of training text
  stats.json                documents and exact character counts per split, skipped input

The source is streamed: memory holds one parquet row group per output file, never the corpus.
The train/validation split is a hash of each document's text, so it does not depend on the
order in which a streaming source yields documents.

Sources and how they are read:
  builtin:python-docs   the documentation that ships inside Python (the embedded default)
  hub:NAME              a Hugging Face dataset, streamed with `datasets` (config, split, field)
  parquet               per file through `datasets`' streaming parquet builder
  jsonl / json lines    read line by line here (see `_jsonl_documents` for why)
  txt                   read line by line here; a document is a paragraph (see `_text_documents`)
  .json holding one JSON array: through `datasets`' json builder
Text files may be compressed (.gz, .bz2, .xz, .zst; .lz4 with the `lz4` package installed).

Input that cannot be a document is skipped and counted in stats.json under `skipped`:
  empty      no text, or only whitespace (a blank jsonl line, `"text": ""`, `null`)
  non_utf8   bytes that are not UTF-8, or text that is not valid Unicode (lone surrogates)
  malformed  a jsonl line that is not a JSON object with a string in the text field
The first offending file and line of each kind is logged and kept in `first_skipped`.
"""

from __future__ import annotations

import ast
import glob
import hashlib
import io
import json
import logging
import sys
import sysconfig
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from vocabscale.io import atomic_dir, write_json

log = logging.getLogger(__name__)

BUILTIN_PYTHON_DOCS = "builtin:python-docs"
#: Standard-library parts that some distributions ship separately; left out so the builtin
#: corpus is the same on every installation of one Python version.
_UNSTABLE_STDLIB_PARTS = {
    "site-packages",
    "dist-packages",
    "test",
    "tests",
    "idlelib",
    "lib2to3",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "distutils",
    "venv",
    "__pycache__",
    "config-3",
}
_MIN_DOCSTRING_CHARACTERS = 200
#: Documents are written in parquet row groups of about this many characters: readers
#: downstream hold one row group at a time, so this bounds their memory.
ROW_GROUP_CHARACTERS = 4_000_000
SKIP_KINDS = ("empty", "non_utf8", "malformed")
_READ_BUFFER = 1 << 20


def python_docs() -> Iterator[str]:
    """Documents from the documentation that ships inside Python itself: the pydoc topic pages
    and every substantial docstring of the standard library, in a fixed order."""
    from pydoc_data.topics import topics

    for name in sorted(topics):
        yield topics[name]
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.rglob("*.py")):
        if _UNSTABLE_STDLIB_PARTS.intersection(path.relative_to(stdlib).parts[:-1]):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                docstring = ast.get_docstring(node)
                if docstring and len(docstring) >= _MIN_DOCSTRING_CHARACTERS:
                    yield docstring


# --- reading the source -------------------------------------------------------------------


@dataclass(frozen=True)
class Skip:
    """Input that is not a document: its kind (one of SKIP_KINDS), where it is, and why."""

    kind: str
    where: str
    reason: str


#: What the readers yield: a skipped input, or (field value, location prefix, line/row number).
#: The location string is only built when a document turns out to be bad.
Item = Skip | tuple[Any, str, int]

_FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".txt": "text",
}
_COMPRESSION = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zst": "zstd", ".lz4": "lz4"}


def _split_suffix(path: str) -> tuple[str, str | None]:
    """(format, compression codec or None) from a file name such as `a.jsonl.zst`."""
    stem, codec = path, None
    for suffix, name in _COMPRESSION.items():
        if stem.endswith(suffix):
            stem, codec = stem[: -len(suffix)], name
            break
    for suffix, file_format in _FORMATS.items():
        if stem.endswith(suffix):
            if file_format == "parquet" and codec:
                raise ValueError(
                    f"corpus.source: {path!r}: parquet compresses its own pages; give the "
                    ".parquet file uncompressed"
                )
            return file_format, codec
    raise ValueError(
        f"corpus.source: cannot tell the format of {path!r}; use .jsonl, .json, .parquet or .txt "
        f"(optionally compressed: {', '.join(_COMPRESSION)})"
    )


def local_files(patterns: list[str]) -> list[str]:
    """Expand the source globs in order (each sorted); every pattern must match a file."""
    files: list[str] = []
    for pattern in patterns:
        matched = sorted(p for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
        if not matched:
            raise FileNotFoundError(f"corpus.source: no file matches {pattern!r}")
        files.extend(matched)
    for path in files:
        _split_suffix(path)  # an unknown format is an error before anything is read
    return files


@contextmanager
def open_binary(path: str) -> Iterator[IO[bytes]]:
    """Open a local file for reading bytes, decompressing by its suffix through fsspec (as
    `datasets` does); buffered, because some decompressors (zstandard's) cannot iterate lines."""
    import fsspec
    from fsspec.compression import compr

    _, codec = _split_suffix(path)
    if codec and codec not in compr:
        package = {"zstd": "zstandard"}.get(codec, codec)
        raise ValueError(f"corpus.source: reading {path!r} needs the `{package}` package")
    with fsspec.open(path, "rb", compression=codec) as raw:
        yield io.BufferedReader(raw, _READ_BUFFER) if codec else raw


def _jsonl_documents(path: str, text_field: str) -> Iterator[Item]:
    """One document per line of JSON lines.

    Read here rather than with `datasets`' json builder: that builder parses a file in blocks
    with pyarrow and fails the whole file on one malformed line or one invalid byte, so a
    200 GB corpus with a single bad record could not be read at all, and the error could not
    name the line. Per-line reading skips and counts such lines and names the first one.
    """
    prefix = f"{path}:"
    with open_binary(path) as stream:
        for number, raw in enumerate(stream, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                yield Skip("non_utf8", f"{prefix}{number}", f"byte {error.start}: {error.reason}")
                continue
            if number == 1:
                line = line.removeprefix("\ufeff")
            if not line or line.isspace():
                yield Skip("empty", f"{prefix}{number}", "blank line")
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                reason = f"not JSON ({error.msg} at column {error.colno})"
                yield Skip("malformed", f"{prefix}{number}", reason)
                continue
            if not isinstance(record, dict):
                reason = f"a JSON {type(record).__name__}, not an object"
                yield Skip("malformed", f"{prefix}{number}", reason)
            elif text_field not in record:
                fields = ", ".join(map(str, record)) or "none"
                reason = f"no field {text_field!r} (fields: {fields}; see corpus.text_field)"
                yield Skip("malformed", f"{prefix}{number}", reason)
            else:
                yield record[text_field], prefix, number


def _text_documents(path: str) -> Iterator[Item]:
    """Plain text: a document is a paragraph, a run of lines between blank lines, as the lines
    are in the file without the final line break.

    Read here rather than with `datasets`' text builder: that builder decodes whole chunks, so
    one invalid byte either fails the file or is silently replaced, and it cannot say where.
    Here a paragraph with invalid bytes is skipped and counted, and its first bad line named.
    """
    lines: list[str] = []
    first_line = 0
    bad: Skip | None = None
    with open_binary(path) as stream:
        for number, raw in enumerate(stream, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                if bad is None:
                    reason = f"byte {error.start}: {error.reason}"
                    bad = Skip("non_utf8", f"{path}:{number}", reason)
                continue
            if number == 1:
                line = line.removeprefix("\ufeff")
            if line.isspace():
                yield from _paragraph(lines, bad, path, first_line)
                lines, bad = [], None
            else:
                if not lines:
                    first_line = number
                lines.append(line)
    yield from _paragraph(lines, bad, path, first_line)


def _paragraph(lines: list[str], bad: Skip | None, path: str, first_line: int) -> Iterator[Item]:
    if bad is not None:
        yield bad
    elif lines:
        yield "".join(lines).removesuffix("\n").removesuffix("\r"), f"{path}:", first_line


def _starts_json_array(path: str) -> bool:
    with open_binary(path) as stream:
        head = stream.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(b"[")


def dataset_documents(stream: Any, text_field: str, label: str) -> Iterator[Item]:
    """Documents from a streaming `datasets.IterableDataset`, read in batches of rows; `label`
    names the source in messages (`<label> row N`, counted from 0)."""
    prefix = f"{label} row "
    row = 0
    for batch in stream.iter(batch_size=1000):
        if text_field not in batch:
            raise KeyError(
                f"corpus.text_field: {label} has no field {text_field!r} "
                f"(fields: {', '.join(batch)})"
            )
        for value in batch[text_field]:
            yield value, prefix, row
            row += 1


def _datasets_file(builder: str, path: str, text_field: str) -> Iterator[Item]:
    """One local file streamed through a `datasets` builder (parquet, JSON arrays)."""
    import datasets

    options: dict[str, Any] = {}
    if builder == "parquet":
        columns = pq.read_schema(path).names
        if text_field not in columns:
            raise KeyError(
                f"corpus.text_field: {path} has no column {text_field!r} "
                f"(columns: {', '.join(columns)})"
            )
        options["columns"] = [text_field]  # decode only the text, not the metadata columns
    stream = datasets.load_dataset(
        builder, data_files={"train": [path]}, split="train", streaming=True, **options
    )
    yield from dataset_documents(stream, text_field, path)


def iter_documents(corpus: dict[str, Any]) -> Iterator[Item]:
    """Everything the configured source yields, in a fixed order, streaming. A source that
    cannot be read (no such file, unknown format) is an error here, before any reading."""
    source = corpus["source"]
    text_field = corpus["text_field"]
    if source == BUILTIN_PYTHON_DOCS:
        return (
            (text, f"{BUILTIN_PYTHON_DOCS} document ", number)
            for number, text in enumerate(python_docs())
        )
    if isinstance(source, str) and source.startswith("hub:"):
        import datasets

        stream = datasets.load_dataset(
            source[4:], corpus["hub_config"], split=corpus["split"], streaming=True
        )
        return dataset_documents(stream, text_field, source)
    return _local_documents(
        local_files([source] if isinstance(source, str) else list(source)), text_field
    )


def _local_documents(files: list[str], text_field: str) -> Iterator[Item]:
    for path in files:
        file_format, _ = _split_suffix(path)
        if file_format == "parquet":
            yield from _datasets_file("parquet", path, text_field)
        elif file_format == "json" and _starts_json_array(path):
            yield from _datasets_file("json", path, text_field)
        elif file_format in ("json", "jsonl"):
            yield from _jsonl_documents(path, text_field)
        else:
            yield from _text_documents(path)


def _problem(value: Any) -> tuple[str, str] | None:
    """Why a field value cannot be a document, as (kind, reason); None when it can."""
    if value is None:
        return "empty", "null text"
    if not isinstance(value, str):
        return "malformed", f"the text field holds a {type(value).__name__}, not a string"
    if not value or value.isspace():
        return "empty", "empty text" if not value else "only whitespace"
    return None


@dataclass
class SkipCounter:
    """Counts skipped input by kind and remembers (and logs) the first of each kind."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SKIP_KINDS, 0))
    first: dict[str, str] = field(default_factory=dict)

    def add(self, skip: Skip) -> None:
        self.counts[skip.kind] += 1
        if skip.kind not in self.first:
            self.first[skip.kind] = f"{skip.where}: {skip.reason}"
            log.warning(
                "skipped a %s document at %s: %s (further ones are only counted, in stats.json)",
                skip.kind,
                skip.where,
                skip.reason,
            )

    def summary(self) -> str:
        return ", ".join(f"{count} {kind}" for kind, count in self.counts.items())


# --- writing ------------------------------------------------------------------------------


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
class _ShardWriter:
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


def train_shards(corpus_dir: str | Path) -> list[Path]:
    shards = sorted(Path(corpus_dir, "train").glob("*.parquet"))
    if not shards:
        raise FileNotFoundError(f"{corpus_dir}/train: no shards; run prepare-corpus first")
    return shards


def is_validation(data: bytes, fraction: float) -> bool:
    """Deterministic split by document content (its UTF-8 bytes): the first 8 bytes of
    BLAKE2b as a fraction."""
    digest = hashlib.blake2b(data, digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < fraction


# --- the stage ----------------------------------------------------------------------------


def prepare_corpus(corpus: dict[str, Any], out_dir: str | Path) -> dict[str, Any]:
    """Run the stage; returns the stats it wrote."""
    counts = {
        split: {"documents": 0, "characters": 0}
        for split in ("train", "validation", "tokenizer_sample")
    }
    skipped = SkipCounter()
    sample_cap = corpus["tokenizer_sample_characters"]
    validation_cap = corpus["validation_characters"]
    max_characters = corpus["max_characters"]
    fraction = corpus["validation_fraction"]
    items = iter_documents(corpus)
    with atomic_dir(out_dir) as tmp:
        shards = _ShardWriter(tmp / "train", corpus["shard_characters"])
        writers = {
            "validation": TextWriter(tmp / "validation.parquet"),
            "tokenizer_sample": TextWriter(tmp / "tokenizer_sample.parquet"),
        }
        progress = tqdm(desc="prepare_corpus", unit=" chars", unit_scale=True, mininterval=2)
        total = 0
        for item in items:
            if isinstance(item, Skip):
                skipped.add(item)
                continue
            value, prefix, number = item
            problem = _problem(value)
            if problem is not None:
                skipped.add(Skip(problem[0], f"{prefix}{number}", problem[1]))
                continue
            try:
                data = value.encode("utf-8")
            except UnicodeEncodeError as error:
                reason = f"not valid Unicode at character {error.start}: {error.reason}"
                skipped.add(Skip("non_utf8", f"{prefix}{number}", reason))
                continue
            if max_characters and total >= max_characters:
                break
            characters = len(value)
            total += characters
            progress.update(characters)
            if counts["validation"]["characters"] < validation_cap and is_validation(
                data, fraction
            ):
                split = "validation"
                writers["validation"].add(value)
            else:
                split = "train"
                shards.add(value)
                room = sample_cap - counts["tokenizer_sample"]["characters"]
                if room > 0:  # a prefix of the training text, cut to exactly the cap
                    piece = value[:room]
                    writers["tokenizer_sample"].add(piece)
                    counts["tokenizer_sample"]["documents"] += 1
                    counts["tokenizer_sample"]["characters"] += len(piece)
            counts[split]["documents"] += 1
            counts[split]["characters"] += characters
        progress.close()
        shards.close()
        for writer in writers.values():
            writer.close()
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
        stats = {
            "source": corpus["source"],
            "splits": counts,
            "train_shards": shards.shards,
            "skipped": skipped.counts,
            "first_skipped": skipped.first,
        }
        if corpus["source"] == BUILTIN_PYTHON_DOCS:
            stats["python"] = ".".join(map(str, sys.version_info[:3]))
        write_json(tmp / "stats.json", stats)
    log.info(
        "corpus: %d train documents (%d characters), %d validation documents (%d characters); "
        "skipped: %s",
        counts["train"]["documents"],
        counts["train"]["characters"],
        counts["validation"]["documents"],
        counts["validation"]["characters"],
        skipped.summary(),
    )
    return stats
