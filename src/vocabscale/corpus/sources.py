"""Reading a corpus source: every document it holds, in a fixed order, streaming. A source is
the documentation inside Python (`builtin:python-docs`, the embedded default), a Hugging Face
dataset (`hub:NAME`, streamed with `datasets`), or local .jsonl, .json, .parquet and .txt files
(a document is a paragraph), text ones optionally compressed (.gz, .bz2, .xz, .zst; .lz4 with
the `lz4` package). Input that cannot be a document is a `Skip`, counted by `SkipCounter`."""

from __future__ import annotations

import ast
import glob
import io
import json
import logging
import sysconfig
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pyarrow.parquet as pq

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
SKIP_KINDS = ("empty", "non_utf8", "malformed", "too_long")
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


@dataclass(frozen=True)
class Skip:
    """Input that is not a document: its kind (one of SKIP_KINDS), where it is, and why.

    empty      no text, or only whitespace (a blank jsonl line, `"text": ""`, `null`)
    non_utf8   bytes that are not UTF-8, or text that is not valid Unicode (lone surrogates)
    malformed  a jsonl line that is not a JSON object with a string in the text field
    too_long   a jsonl line, a text paragraph or a document of more than
               `corpus.max_document_bytes`; jsonl and text are read in bounded pieces, so a
               file without line breaks is skipped without being read into memory
    """

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


def _lines(stream: IO[bytes], limit: int) -> Iterator[bytes | None]:
    """The lines of a binary stream, None for one of more than `limit` bytes, which is read past
    in bounded pieces rather than into memory."""
    while line := stream.readline(limit + 1):
        if len(line) > limit and not line.endswith(b"\n"):
            while (rest := stream.readline(limit + 1)) and not rest.endswith(b"\n"):
                pass
            yield None
        else:
            yield line


def _too_long(where: str, limit: int) -> Skip:
    return Skip("too_long", where, f"more than corpus.max_document_bytes = {limit:,} bytes")


def _jsonl_documents(path: str, text_field: str, limit: int) -> Iterator[Item]:
    """One document per line of JSON lines.

    Read here rather than with `datasets`' json builder: that builder parses a file in blocks
    with pyarrow and fails the whole file on one malformed line or one invalid byte, so a
    200 GB corpus with a single bad record could not be read at all, and the error could not
    name the line. Per-line reading skips and counts such lines and names the first one.
    """
    prefix = f"{path}:"
    with open_binary(path) as stream:
        for number, raw in enumerate(_lines(stream, limit), 1):
            if raw is None:
                yield _too_long(f"{prefix}{number}", limit)
                continue
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


def _text_documents(path: str, limit: int) -> Iterator[Item]:
    """Plain text: a document is a paragraph, a run of lines between blank lines, as the lines
    are in the file without the final line break.

    Read here rather than with `datasets`' text builder: that builder decodes whole chunks, so
    one invalid byte either fails the file or is silently replaced, and it cannot say where.
    Here a paragraph with invalid bytes is skipped and counted, and its first bad line named;
    so is one of more than `limit` bytes, whose lines are dropped as they are read.
    """
    lines: list[str] = []
    start = size = 0
    bad: Skip | None = None
    with open_binary(path) as stream:
        for number, raw in enumerate(_lines(stream, limit), 1):
            try:
                line = None if raw is None else raw.decode("utf-8")
            except UnicodeDecodeError as error:
                reason = f"byte {error.start}: {error.reason}"
                bad, line = bad or Skip("non_utf8", f"{path}:{number}", reason), None
            if number == 1 and line is not None:
                line = line.removeprefix("\ufeff")
            if line is not None and line.isspace():
                yield from _paragraph(lines, bad, path, start)
                lines, bad, start, size = [], None, 0, 0
                continue
            start = start or number
            size += limit + 1 if raw is None else len(raw)
            if size > limit and bad is None:
                bad = _too_long(f"{path}:{start}", limit)
            if bad is None:
                lines.append(line)
            else:
                lines = []  # the paragraph is skipped whole: none of its text is kept
    yield from _paragraph(lines, bad, path, start)


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
            raise ValueError(
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
            raise ValueError(
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
        local_files([source] if isinstance(source, str) else list(source)),
        text_field,
        corpus["max_document_bytes"],
    )


def _local_documents(files: list[str], text_field: str, limit: int) -> Iterator[Item]:
    for path in files:
        file_format, _ = _split_suffix(path)
        if file_format == "parquet":
            yield from _datasets_file("parquet", path, text_field)
        elif file_format == "json" and _starts_json_array(path):
            yield from _datasets_file("json", path, text_field)
        elif file_format in ("json", "jsonl"):
            yield from _jsonl_documents(path, text_field, limit)
        else:
            yield from _text_documents(path, limit)


def problem_with(value: Any) -> tuple[str, str] | None:
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
