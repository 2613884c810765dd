"""The tokenize stage's resume protocol: work happens in a partial directory beside the output,
whose progress record says how far the input has been read and how many bytes of the arrays
hold it; a rerun goes on from there only when its fingerprint (input, tokenizer, code and
libraries) still matches (docs/design.md, Corpus and tokens)."""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow
import tokenizers

from vocabscale.io import TOKEN_SPLITS, write_json

log = logging.getLogger(__name__)

#: Layout version of the partial work directory; a change discards old partial work.
PARTIAL_FORMAT = 2

#: The code of the tokenize stage (its modules in dvc.yaml): partial work or a part made by
#: other code is not continued, as the two pieces of one array could differ.
STAGE_CODE = (
    "vocabscale.corpus.shards",
    "vocabscale.tokenizer.arrays",
    "vocabscale.tokenizer.batching",
    "vocabscale.tokenizer.bpe",
    "vocabscale.tokenizer.one_job",
    "vocabscale.tokenizer.parts",
    "vocabscale.tokenizer.prefetch",
    "vocabscale.tokenizer.resume",
    "vocabscale.tokenizer.tokenize",
)


@dataclass
class Progress:
    """The progress record: finished splits, and how far the split in progress has got."""

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


def partial_dir(out_dir: Path) -> Path:
    """Where the work towards `out_dir` happens until it is published."""
    return out_dir.parent / f".{out_dir.name}.partial"


def file_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def fingerprint(inputs: list[Path], tokenizer_path: Path) -> str:
    """What the partial work depends on: the stage's code, the versions of the libraries that
    read and encode, the tokenizer file, and each input file's name, size and parquet footer
    (row groups, row counts, column statistics). Cheap on any corpus size."""
    digest = hashlib.sha256(f"partial format {PARTIAL_FORMAT}\n".encode())
    for module in STAGE_CODE:
        digest.update(Path(importlib.import_module(module).__file__).read_bytes())
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


def _unusable(work: Path, progress: Progress | None, fingerprint: str, itemsize: int) -> str | None:
    """Why the partial work in `work` cannot be continued; None when it can."""
    if progress is None:
        return "no readable checkpoint"
    if progress.fingerprint != fingerprint:
        return "the corpus, the tokenizer, this code or a library version changed since"
    problem = None
    for split, stats in progress.done.items():
        if file_size(work / f"{split}.bin") != stats["tokens"] * itemsize:
            problem = f"{split}.bin does not match its checkpoint"
    if "train" in progress.done and not (work / "unigram_counts.npy").exists():
        problem = "the unigram counts of train.bin are missing"
    current = progress.split
    if current not in progress.done and file_size(work / f"{current}.bin") < progress.bytes:
        problem = f"{current}.bin is shorter than its checkpoint"
    return problem


def open_partial(work: Path, fingerprint: str, itemsize: int) -> Progress:
    """The progress record to go on from, or a fresh start when there is none that fits."""
    progress_path = work / "progress.json"
    if work.exists():
        progress = Progress.load(progress_path)
        problem = _unusable(work, progress, fingerprint, itemsize)
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
