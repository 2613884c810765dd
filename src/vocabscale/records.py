"""The fields of a JSON record one stage writes and another reads (a run's run.json, a corpus's
or a tokenization's stats.json). A missing field is an error naming the file and the key, which
the command line prints as one line (a bare KeyError would print only the key's name)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class RecordError(ValueError):
    """A record lacks a field; the message names the file and the key."""


def field(record: Any, path: str | Path, *keys: str) -> Any:
    """`record[keys[0]][keys[1]]...`, or a RecordError naming `path` and the dotted key."""
    value = record
    for depth, key in enumerate(keys):
        if not isinstance(value, dict) or key not in value:
            where = ".".join(keys[: depth + 1])
            raise RecordError(
                f"{path}: no {where!r} (written by another version of vocabscale, or by hand? "
                "run the stage that makes it again)"
            )
        value = value[key]
    return value
