"""The tokenize stage's resume protocol: work happens in a partial directory beside the output,
whose progress record says how far the input has been read and how many bytes of the arrays
hold it; a rerun goes on from there only when its fingerprint (input, tokenizer, code and
libraries) still matches (docs/design.md, Corpus and tokens). Partial work whose record cannot
be read, or whose arrays disagree with it, is an error that names the file and removes nothing:
a person decides."""

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

from vocabscale.io import TOKEN_SPLITS, atomic_path, remove_stale_temporaries, write_json

log = logging.getLogger(__name__)

#: Layout version of the partial work directory; a change discards old partial work.
PARTIAL_FORMAT = 2
#: The progress record in the partial directory: no part of the published output.
PROGRESS = "progress.json"
#: The training split's unigram counts, written when the split is done.
COUNTS = "unigram_counts.npy"
#: What the stage writes in the partial directory by atomic writes: a kill during one leaves a
#: temporary beside it, cleared before the work goes on.
ATOMIC_FILES = (PROGRESS, COUNTS, "stats.json", "part.json")

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
    def load(cls, path: Path) -> Progress:
        """The record at `path`; PartialWorkError, naming it and the cause, when it cannot be
        read."""
        try:
            data = json.loads(path.read_text())
            data["position"] = tuple(data["position"])
            return cls(**data)
        except FileNotFoundError:
            cause = "missing (the work was stopped before its first record, or while published)"
        except OSError as error:
            cause = f"cannot be read ({error.strerror})"
        except ValueError as error:
            cause = f"not valid JSON ({error})"
        except (TypeError, KeyError) as error:
            cause = f"not a progress record of this version ({type(error).__name__}: {error})"
        raise cannot_continue(path.parent, path, cause)

    def save(self, path: Path) -> None:
        write_json(path, asdict(self))


class PartialWorkError(ValueError):
    """Partial work that cannot be continued as it is; the message names the file, the cause
    and what to do."""


def cannot_continue(work: Path, path: Path, cause: str) -> PartialWorkError:
    return PartialWorkError(
        f"{path}: {cause}. The partial work in {work} cannot be continued, and nothing was "
        f"removed: to start over, delete it (rm -r {work}) and run this again."
    )


def save_counts(work: Path, counts: np.ndarray) -> None:
    """The unigram counts, durable under their name before any record says the split is done
    (a power loss could otherwise leave the record and an empty file)."""
    with atomic_path(work / COUNTS) as tmp, open(tmp, "wb") as stream:
        np.save(stream, counts)


def load_counts(work: Path, vocab_size: int) -> np.ndarray:
    """The unigram counts of a finished training split; PartialWorkError when unreadable."""
    path = work / COUNTS
    try:
        counts = np.load(path)
    except (OSError, ValueError, EOFError) as error:
        raise cannot_continue(work, path, f"cannot be read ({error})") from None
    if counts.shape != (vocab_size,):
        raise cannot_continue(work, path, f"holds {counts.shape} counts, not ({vocab_size},)")
    return counts


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


def _disagreement(work: Path, progress: Progress, itemsize: int) -> tuple[Path, str] | None:
    """(file, how) where the arrays in `work` disagree with their record; None when they
    agree."""
    for split, stats in progress.done.items():
        path = work / f"{split}.bin"
        if file_size(path) != stats["tokens"] * itemsize:
            return path, f"{file_size(path)} bytes, not the {stats['tokens']} tokens of {PROGRESS}"
    if "train" in progress.done and not (work / COUNTS).exists():
        return work / COUNTS, f"missing, though {PROGRESS} has the training split done"
    current, path = progress.split, work / f"{progress.split}.bin"
    if current not in progress.done and file_size(path) < progress.bytes:
        return path, f"{file_size(path)} bytes, shorter than the {progress.bytes} of {PROGRESS}"
    return None


def open_partial(work: Path, fingerprint: str, itemsize: int) -> Progress:
    """The progress record to go on from; a fresh start where there is no partial work, or
    where its fingerprint says it was made from other input, code or libraries.
    PartialWorkError, removing nothing, where its record cannot be read or its arrays
    disagree with it."""
    progress_path = work / PROGRESS
    if work.exists():
        for name in ATOMIC_FILES:  # a writer killed during an atomic write left these
            remove_stale_temporaries(work / name)
    if work.exists() and any(work.iterdir()):  # empty: killed before its first record
        progress = Progress.load(progress_path)
        if progress.fingerprint == fingerprint:
            problem = _disagreement(work, progress, itemsize)
            if problem is not None:
                raise cannot_continue(work, *problem)
            log.info(
                "resuming partial work in %s: %s done, %s from file %d row %d (%d documents)",
                work,
                ", ".join(progress.done) or "no split",
                progress.split,
                *progress.position,
                progress.documents,
            )
            return progress
        log.warning(
            "discarding partial work in %s: the corpus, the tokenizer, this code or a library "
            "version changed since",
            work,
        )
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    progress = Progress(fingerprint)
    progress.save(progress_path)
    return progress
