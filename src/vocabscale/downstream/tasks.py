"""Command `vocabscale downstream-tasks`: what the downstream scores depend on besides the runs
and the settings, in one small file both engines track (results/downstream_tasks.json).

The task definitions lie in files under `downstream.include_path`, a directory a setting names,
and in lm-evaluation-harness itself, whose version decides its built-in tasks and its scoring;
neither engine can follow them as dependencies (a dvc.yaml path cannot come from a setting that
may be null). So their fingerprint, the sha256 of every file under the directory and the
harness' version, is written here, and every downstream stage depends on that file. The
Snakefile computes the fingerprint when it reads the workflow and gives it to this rule as a
param, so Snakemake reruns it, and the downstream jobs after it, as soon as a task file or the
harness changes; DVC sees the change once this stage has run again (`dvc repro --force
--single-item downstream_tasks`, or after a Snakemake run and its hand-over). With no tasks
(evaluation off) the fingerprint is constant: nothing is evaluated, nothing depends on them.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
from pathlib import Path
from typing import Any

from vocabscale.config import ParamsError, add_params_argument, load_params
from vocabscale.io import output_lock, read_json, write_json


def lm_eval_version() -> str | None:
    """The installed lm-evaluation-harness' version (read without importing it, which takes
    seconds); None when it is not installed."""
    for name in ("lm_eval", "lm-eval"):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _sha256(path: Path) -> str:
    with open(path, "rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def task_files(include_path: str | None) -> dict[str, str]:
    """sha256 of every file under `include_path` (task YAMLs and the Python they name), by
    path relative to it; hidden files and bytecode left out."""
    if not include_path or not Path(include_path).is_dir():
        return {}
    root = Path(include_path)
    found = {}
    for path in sorted(root.rglob("*")):
        parts = path.relative_to(root).parts
        if any(part.startswith(".") or part == "__pycache__" for part in parts):
            continue
        if path.is_file():
            found["/".join(parts)] = _sha256(path)
    return found


def task_fingerprint(settings: dict[str, Any]) -> dict[str, Any]:
    """What the scores depend on beyond the runs and `settings` (the `downstream` section):
    the task files and the harness' version; constant while evaluation is off."""
    if not settings["tasks"]:
        return {"evaluation": "off"}
    return {"lm_eval": lm_eval_version(), "task_files": task_files(settings["include_path"])}


def check_fingerprint(path: str | Path, settings: dict[str, Any]) -> dict[str, Any]:
    """The fingerprint recorded at `path`, checked to be that of the task files and harness
    here and now: scores are never recorded against task files other than those they used."""
    recorded, current = read_json(path), task_fingerprint(settings)
    if recorded != current:
        raise ParamsError(
            f"{path} does not match the task files under downstream.include_path and the "
            "lm-evaluation-harness installed here (one of them changed since it was written): "
            "run its stage again first (snakemake does by itself; `dvc repro --force "
            "--single-item downstream_tasks`)"
        )
    return recorded


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_params_argument(parser)
    parser.add_argument("--out", required=True, help="the fingerprint (JSON) to write")


def run(args: argparse.Namespace) -> None:
    settings = load_params(args.params)["downstream"]
    with output_lock(args.out):
        write_json(args.out, task_fingerprint(settings))
