"""Writes that survive a crash: an artifact's bytes reach the disk before it gets its final
name, and outputs that belong together are replaced together."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from vocabscale.cli import main
from vocabscale.estimate import estimate_command, synthetic
from vocabscale.estimate.published import PAPER_COEFFICIENTS
from vocabscale.io import atomic_dir, write_json


@pytest.fixture
def disk_events(monkeypatch) -> list[tuple[str, str]]:
    """Every fsync (of the path its descriptor names) and rename, in order."""
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(source, target) -> None:
        events.append(("rename", f"{source} -> {target}"))
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


def test_a_file_is_on_disk_before_it_takes_its_name(tmp_path, disk_events):
    path = tmp_path / "results" / "fit.json"
    write_json(path, {"a": 1})
    (rename,) = [i for i, (kind, _) in enumerate(disk_events) if kind == "rename"]
    temporary = disk_events[rename][1].split(" -> ")[0]
    assert disk_events[rename][1] == f"{temporary} -> {path}"
    assert ("fsync", temporary) in disk_events[:rename]
    assert ("fsync", str(path.parent)) in disk_events[rename:]  # the rename itself, durable


def test_a_directory_is_on_disk_before_it_takes_its_name(tmp_path, disk_events):
    path = tmp_path / "results" / "report"
    with atomic_dir(path) as tmp:
        (tmp / "figures").mkdir()
        (tmp / "figures" / "a.png").write_bytes(b"png")
        (tmp / "report.md").write_text("report")
    renames = [i for i, (kind, what) in enumerate(disk_events) if what.endswith(f"-> {path}")]
    (rename,) = renames
    synced = {what for kind, what in disk_events[:rename] if kind == "fsync"}
    temporary = disk_events[rename][1].split(" -> ")[0]
    assert {f"{temporary}/figures/a.png", f"{temporary}/report.md"} <= synced
    assert ("fsync", str(path.parent)) in disk_events[rename:]


@pytest.fixture(scope="module")
def runs_table(tmp_path_factory) -> Path:
    law = synthetic.parametric_law(PAPER_COEFFICIENTS["parametric"])
    frame = synthetic.runs_table(law, synthetic.paper_models(3), (4096, 8192, 16384), 6, 0.002)
    path = tmp_path_factory.mktemp("runs") / "runs.csv"
    frame.to_csv(path, index=False)
    return path


def estimate(runs: Path, out: Path, *options: str) -> None:
    main(["estimate", "--runs", str(runs), "--out", str(out), "--tokenization", "paper",
          "--bootstrap", "0", "--min-flops", "0", *options])  # fmt: skip


def test_estimate_replaces_its_two_outputs_together(runs_table, tmp_path, monkeypatch):
    """A failure while writing the second file leaves the first pair as it was, not a new
    coefficients.json beside an old predictions.csv."""
    out = tmp_path / "fits"
    estimate(runs_table, out)
    before = {name: (out / name).read_bytes() for name in estimate_command.OUTPUTS}

    def failing_write_csv(path, frame):
        raise OSError("disk full")

    monkeypatch.setattr(estimate_command, "write_csv", failing_write_csv)
    with pytest.raises(OSError, match="disk full"):
        estimate(runs_table, out, "--huber-delta", "0.01")
    assert {name: (out / name).read_bytes() for name in estimate_command.OUTPUTS} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fits"]  # no temporary left
    assert json.loads(before["coefficients.json"])["parametric"]["options"]["huber_delta"] != 0.01


def test_estimate_refuses_a_directory_holding_other_files(runs_table, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit) as stopped:
        estimate(runs_table, out)
    assert stopped.value.code == 2
    assert f"--out {out} holds notes.txt" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
