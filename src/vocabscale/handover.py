"""The hand-over from Snakemake to DVC: `vocabscale dvc-commit`.

After `snakemake` (local or on SLURM) has run params.yaml to the end, `dvc commit --force`
records every result in dvc.lock and the DVC cache, stages that never ran under DVC included.
Around it, two checks that fail loudly instead of recording something wrong: Snakemake must
have nothing left to do for params.yaml (a run that is unfinished, or results of other
settings, would otherwise be recorded as those of params.yaml), and afterwards `dvc status`
must be clean, so that `dvc repro` runs nothing and `dvc push` shares the results.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)


class HandOverError(RuntimeError):
    """The results cannot be recorded as they are; the message says why."""


def _run(root: Path, *argv: str, capture: bool = True) -> subprocess.CompletedProcess:
    """Run snakemake or dvc (`argv[0]`) of this interpreter's environment in `root`."""
    return subprocess.run(
        [sys.executable, "-m", *argv], cwd=root, capture_output=capture, text=True
    )


def dvc_commit(root: str | Path = ".") -> None:
    """Record the finished Snakemake run in `root` with DVC; raise HandOverError otherwise."""
    root = Path(root)
    if not (root / "Snakefile").is_file() or not (root / "dvc.yaml").is_file():
        raise HandOverError(f"{root.resolve()} is not the repository root (no Snakefile, dvc.yaml)")
    dry_run = _run(root, "snakemake", "--dry-run")
    said = dry_run.stdout + dry_run.stderr
    if dry_run.returncode:
        raise HandOverError(f"`snakemake --dry-run` failed:\n{said[-2000:]}")
    if "Nothing to be done" not in said:
        raise HandOverError(
            "Snakemake has jobs left to run for params.yaml: the results on disk are unfinished "
            "or of other settings, and recording them would pass them off as those of "
            "params.yaml. Finish the run first (`snakemake -n` lists the jobs and why).\n"
            + said[-2000:]
        )
    log.info("Snakemake has nothing left to do; recording its results with dvc commit")
    if _run(root, "dvc", "commit", "--force", capture=False).returncode:
        raise HandOverError("`dvc commit --force` failed (its message is above)")
    status = _run(root, "dvc", "status", "--json")
    if status.returncode:
        raise HandOverError(f"`dvc status` failed: {status.stderr.strip()}")
    changed = json.loads(status.stdout or "{}")
    if changed:
        details = "\n".join(f"  {stage}: {json.dumps(what)}" for stage, what in changed.items())
        raise HandOverError(f"`dvc status` is not clean after the commit:\n{details}")
    log.info("dvc.lock and the DVC cache hold every result: `dvc status` is clean")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`vocabscale dvc-commit` runs at the repository root and takes no options."""


def run(args: argparse.Namespace) -> None:
    try:
        dvc_commit()
    except HandOverError as error:
        log.error("%s", error)
        sys.exit(1)
