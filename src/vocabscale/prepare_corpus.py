"""Stage prepare_corpus: read the source corpus once, split it by document, write text shards.

Outputs (one directory):
  train/NNNNN.parquet       training documents (column `text`), sharded by characters
  validation.parquet        the held-out documents: the fixed evaluation text of every run
  tokenizer_sample.parquet  the first `tokenizer_sample_characters` of training text
  stats.json                documents and exact character counts per split, skipped input

The train/validation split is a hash of each document's text, so it does not depend on the
order in which a streaming source yields documents.
"""

from __future__ import annotations

import ast
import glob
import hashlib
import logging
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".txt": "text"}
_COMPRESSION = (".gz", ".bz2", ".xz", ".zst", ".lz4")


def _builder_for(path: str) -> str:
    stem = path
    for suffix in _COMPRESSION:
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    for suffix, builder in _BUILDERS.items():
        if stem.endswith(suffix):
            return builder
    raise ValueError(
        f"corpus.source: cannot tell the format of {path!r}; use .jsonl, .json, .parquet or .txt "
        f"(optionally compressed: {', '.join(_COMPRESSION)})"
    )


def local_files(patterns: list[str]) -> list[str]:
    """Expand the source globs; every pattern must match at least one file."""
    files: list[str] = []
    for pattern in patterns:
        matched = sorted(glob.glob(pattern, recursive=True))
        if not matched:
            raise FileNotFoundError(f"corpus.source: no file matches {pattern!r}")
        files.extend(matched)
    builders = {_builder_for(path) for path in files}
    if len(builders) > 1:
        raise ValueError(f"corpus.source: mixes formats ({', '.join(sorted(builders))})")
    return files


def iter_documents(corpus: dict[str, Any]) -> Iterator[str]:
    """Yield document texts from the configured source, streaming where the source allows."""
    source = corpus["source"]
    if source == BUILTIN_PYTHON_DOCS:
        yield from python_docs()
        return
    import datasets

    text_field = corpus["text_field"]
    if isinstance(source, str) and source.startswith("hub:"):
        stream = datasets.load_dataset(
            source[4:], corpus["hub_config"], split=corpus["split"], streaming=True
        )
    else:
        files = local_files([source] if isinstance(source, str) else list(source))
        builder = _builder_for(files[0])
        options = {"sample_by": "paragraph"} if builder == "text" else {}
        stream = datasets.load_dataset(
            builder, data_files={"train": files}, split="train", streaming=True, **options
        )
    for row in stream:
        if text_field not in row:
            raise KeyError(
                f"corpus.text_field: the source has no field {text_field!r} "
                f"(fields: {', '.join(row)})"
            )
        yield row[text_field]


def is_validation(text: str, fraction: float) -> bool:
    """Deterministic split by document content: the first 8 bytes of BLAKE2b as a fraction."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < fraction


@dataclass
class _ShardWriter:
    """Accumulate documents and write parquet files of about `shard_characters` each."""

    directory: Path
    shard_characters: int
    buffer: list[str] = field(default_factory=list)
    buffered: int = 0
    shards: int = 0

    def add(self, text: str) -> None:
        self.buffer.append(text)
        self.buffered += len(text)
        if self.buffered >= self.shard_characters:
            self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        write_texts(self.directory / f"{self.shards:05d}.parquet", self.buffer)
        self.shards += 1
        self.buffer, self.buffered = [], 0


def write_texts(path: Path, texts: list[str]) -> None:
    pq.write_table(pa.table({"text": pa.array(texts, pa.large_string())}), path)


def read_texts(path: str | Path) -> Iterator[str]:
    """Documents of one parquet shard written by this stage, in order."""
    for batch in pq.ParquetFile(path).iter_batches(columns=["text"], batch_size=1024):
        yield from batch.column(0).to_pylist()


def train_shards(corpus_dir: str | Path) -> list[Path]:
    shards = sorted(Path(corpus_dir, "train").glob("*.parquet"))
    if not shards:
        raise FileNotFoundError(f"{corpus_dir}/train: no shards; run prepare-corpus first")
    return shards


def prepare_corpus(corpus: dict[str, Any], out_dir: str | Path) -> dict[str, Any]:
    """Run the stage; returns the stats it wrote."""
    counts = {
        split: {"documents": 0, "characters": 0}
        for split in ("train", "validation", "tokenizer_sample")
    }
    skipped = {"empty": 0}
    validation: list[str] = []
    sample: list[str] = []
    with atomic_dir(out_dir) as tmp:
        shards = _ShardWriter(tmp / "train", corpus["shard_characters"])
        progress = tqdm(desc="prepare_corpus", unit=" chars", unit_scale=True, mininterval=2)
        total = 0
        for text in iter_documents(corpus):
            if not text or not text.strip():
                skipped["empty"] += 1
                continue
            if corpus["max_characters"] and total >= corpus["max_characters"]:
                break
            total += len(text)
            progress.update(len(text))
            wants_validation = is_validation(text, corpus["validation_fraction"])
            if (
                wants_validation
                and counts["validation"]["characters"] < corpus["validation_characters"]
            ):
                split = "validation"
                validation.append(text)
            else:
                split = "train"
                shards.add(text)
                if counts["tokenizer_sample"]["characters"] < corpus["tokenizer_sample_characters"]:
                    sample.append(text)
                    counts["tokenizer_sample"]["documents"] += 1
                    counts["tokenizer_sample"]["characters"] += len(text)
            counts[split]["documents"] += 1
            counts[split]["characters"] += len(text)
        progress.close()
        shards.flush()
        for split in ("train", "validation"):
            if not counts[split]["documents"]:
                raise ValueError(
                    f"corpus: the {split} split is empty; the source has "
                    f"{counts['train']['documents'] + counts['validation']['documents']} "
                    "non-empty documents (check corpus.source and corpus.validation_fraction)"
                )
        write_texts(tmp / "validation.parquet", validation)
        write_texts(tmp / "tokenizer_sample.parquet", sample)
        stats = {
            "source": corpus["source"],
            "splits": counts,
            "train_shards": shards.shards,
            "skipped": skipped,
        }
        if corpus["source"] == BUILTIN_PYTHON_DOCS:
            stats["python"] = ".".join(map(str, sys.version_info[:3]))
        write_json(tmp / "stats.json", stats)
    log.info(
        "corpus: %d train documents (%d characters), %d validation documents (%d characters)",
        counts["train"]["documents"],
        counts["train"]["characters"],
        counts["validation"]["documents"],
        counts["validation"]["characters"],
    )
    return stats
