"""The hand-over from Snakemake to DVC: once `snakemake` has run params.yaml to the end, `dvc
commit --force` records every result in dvc.lock and the DVC cache, stages that never ran under
DVC included. Checks around it refuse, naming the outputs, results that are unfinished or of
other code or settings, which would otherwise be recorded as those of params.yaml.
"""

from __future__ import annotations

import csv
import json
import logging
import re
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


def _listing(lines: list[str], most: int = 20) -> str:
    more = f"\n  ... and {len(lines) - most} more" if len(lines) > most else ""
    return "\n".join(f"  {line}" for line in lines[:most]) + more


def pending_jobs(text: str) -> list[str]:
    """Each job of `snakemake --dry-run`'s report, as `output (rule): why`."""
    jobs, rule = [], None
    for line in text.splitlines():
        if match := re.fullmatch(r"(?:local)?rule (\w+):", line):
            rule, output = match[1], None
        elif match := re.fullmatch(r"\s+output: (.+)", line):
            output = match[1]
        elif (match := re.fullmatch(r"\s+reason: (.+)", line)) and rule and output:
            why = match[1] if len(match[1]) < 200 else match[1][:200] + "..."
            jobs.append(f"{output} ({rule}): {why}")
    return jobs


def check_nothing_to_do(root: Path) -> None:
    """Refuse when Snakemake would run anything for params.yaml, naming each output and why."""
    dry_run = _run(root, "snakemake", "--dry-run")
    said = dry_run.stdout + dry_run.stderr
    if dry_run.returncode:
        raise HandOverError(f"`snakemake --dry-run` failed:\n{said[-2000:]}")
    if "Nothing to be done" in said:
        return
    jobs = pending_jobs(said) or [said[-2000:]]
    raise HandOverError(
        "Snakemake has jobs left to run for params.yaml: the results on disk are unfinished, or "
        "older than the code or other than the settings that make them, and recording them "
        "would pass them off as those of params.yaml and this code. Finish the run first "
        "(`snakemake --cores all`). Each output, and why Snakemake would make it again:\n"
        + _listing(jobs)
    )


def check_records(root: Path) -> None:
    """Refuse outputs that Snakemake has no record of making (its params check then passes
    them whatever settings made them), naming them."""
    summary = _run(root, "snakemake", "--detailed-summary")
    if summary.returncode:
        said = summary.stdout + summary.stderr
        raise HandOverError(f"`snakemake --detailed-summary` failed:\n{said[-2000:]}")
    rows = csv.DictReader(summary.stdout.splitlines(), delimiter="\t")
    unrecorded = [
        f"{row['output_file']} ({row['rule']})"
        for row in rows
        if row["date"] != "-" and row["shellcmd"] == "-" and row["input-file(s)"] == "-"
    ]
    if unrecorded:
        raise HandOverError(
            "Snakemake has no record of making these outputs (.snakemake/metadata lacks them), "
            "so nothing tells whether the code and settings of params.yaml made them. Make them "
            "again with Snakemake (`snakemake --cores all --forcerun RULE`), or leave them to "
            "DVC (`dvc status`, `dvc repro`):\n" + _listing(unrecorded)
        )


def dvc_commit(root: str | Path = ".") -> None:
    """Record the finished Snakemake run in `root` with DVC; raise HandOverError otherwise:
    when Snakemake has no record of making an output (it cannot tell with which settings it
    was made), when it has anything left to do for params.yaml (an output missing, older than
    its code or made with other settings), or when `dvc status` is not clean afterwards (then
    `dvc repro` would run something and `dvc push` would not share everything)."""
    root = Path(root)
    if not (root / "Snakefile").is_file() or not (root / "dvc.yaml").is_file():
        raise HandOverError(f"{root.resolve()} is not the repository root (no Snakefile, dvc.yaml)")
    check_records(root)
    check_nothing_to_do(root)
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
