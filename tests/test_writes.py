"""Writes that survive a crash and never cost a user what they own: an artifact's bytes reach
the disk before it gets its final name, outputs that belong together are replaced together, a
command's `--out` replaces only its own earlier output, and artifacts' modes follow the umask."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import REPO, run_in

from vocabscale.cli import main
from vocabscale.estimate import estimate_command, synthetic
from vocabscale.estimate.published import PAPER_COEFFICIENTS
from vocabscale.io import OUTPUT_MARKER, atomic_dir, write_json


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
    with pytest.raises(SystemExit) as stopped:  # not an input error: its traceback, status 1
        estimate(runs_table, out, "--huber-delta", "0.01")
    assert stopped.value.code == 1
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
    assert f"{out} holds notes.txt (no {OUTPUT_MARKER}: not ours)" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def tree(directory: Path) -> dict[str, bytes]:
    """Every file under `directory` (dotfiles too), with its bytes."""
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def test_estimate_refuses_a_directory_holding_only_dotfiles(runs_table, tmp_path, capsys):
    out = tmp_path / "mine"
    (out / ".git").mkdir(parents=True)
    (out / ".git/HEAD").write_text("ref: refs/heads/main\n")
    (out / ".env").write_text("KEY=1\n")
    with pytest.raises(SystemExit):
        estimate(runs_table, out)
    assert f"{out} holds .env, .git (no {OUTPUT_MARKER}" in capsys.readouterr().err
    assert tree(out) == {".env": b"KEY=1\n", ".git/HEAD": b"ref: refs/heads/main\n"}


def test_an_earlier_output_is_replaced_added_files_only_with_force(runs_table, tmp_path, capsys):
    """A rerun replaces its own output; a file a user added to it stops the rerun, naming it,
    unless --force; another command's output is never replaced, --force or not."""
    out = tmp_path / "fits"
    estimate(runs_table, out)
    marker = json.loads((out / OUTPUT_MARKER).read_text())
    assert marker == {"written_by": "vocabscale estimate", "files": list(estimate_command.OUTPUTS)}
    (out / ".snakemake_timestamp").write_text("")  # an engine's marker is no user's file
    estimate(runs_table, out, "--huber-delta", "0.01")
    assert {p.name for p in out.iterdir()} == {*estimate_command.OUTPUTS, OUTPUT_MARKER}
    (out / "figures").mkdir()
    (out / "figures/mine.png").write_bytes(b"png")
    before = tree(out)
    with pytest.raises(SystemExit):
        estimate(runs_table, out)
    said = capsys.readouterr().err
    assert f"{out} is an earlier output of `vocabscale estimate`, but it also holds " in said
    assert "figures/mine.png" in said and "--force" in said
    assert tree(out) == before
    estimate(runs_table, out, "--force")
    assert not (out / "figures").exists() and (out / "coefficients.json").exists()

    (out / OUTPUT_MARKER).write_text(json.dumps({"written_by": "vocabscale backtest", "files": []}))
    before = tree(out)
    with pytest.raises(SystemExit):
        estimate(runs_table, out, "--force")
    assert "(the output of `vocabscale backtest`), which `vocabscale estimate` did not write" in (
        capsys.readouterr().err
    )
    assert tree(out) == before


def test_export_hf_leaves_a_directory_of_other_files_alone(trained_run, tmp_path):
    """The issue's case: `export-hf --out hf` with hf/ holding a user's files."""
    hf = tmp_path / "hf"
    (hf / "a").mkdir(parents=True)
    (hf / "a/k").write_text("key")
    (hf / "notes.txt").write_text("notes")
    said = run_in(tmp_path, "vocabscale", "export-hf", "--run", str(trained_run), "--out", "hf",
                  check=False)  # fmt: skip
    assert said.returncode == 2, said.stderr[-3000:]
    assert "hf holds a, notes.txt (no .vocabscale-output.json: not ours)" in said.stderr
    assert tree(hf) == {"a/k": b"key", "notes.txt": b"notes"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]  # nothing written beside it
    shutil.rmtree(hf)
    for _ in range(2):  # a new directory, then its own earlier export, replaced
        run_in(tmp_path, "vocabscale", "export-hf", "--run", str(trained_run), "--out", "hf")
    assert json.loads((hf / OUTPUT_MARKER).read_text())["written_by"] == "vocabscale export-hf"


@pytest.fixture
def workdir(tmp_path) -> Path:
    """A working directory as a user has one: a git repository, results with the training
    resume state (which DVC does not track), and params.yaml."""
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git/HEAD").write_text("ref: refs/heads/main\n")
    (tmp_path / "results/checkpoints/a-v320").mkdir(parents=True)
    (tmp_path / "results/checkpoints/a-v320/state.pt").write_bytes(b"weights")
    shutil.copyfile(REPO / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


@pytest.mark.parametrize("out", ["results", "."])
def test_report_out_never_empties_a_directory_it_did_not_write(workdir, out):
    before = tree(workdir)
    said = run_in(workdir, "vocabscale", "report", "--estimates", "paper", "--out", out,
                  check=False)  # fmt: skip
    assert said.returncode == 2, said.stderr[-3000:]
    assert "nothing was written" in said.stderr or "leaves this one as it is" in said.stderr
    assert tree(workdir) == before
    assert sorted(p.name for p in workdir.iterdir()) == [".git", "params.yaml", "results"]


def modes(directory: Path) -> set[tuple[str, int]]:
    """(kind, permission bits) of a directory and of everything under it."""
    return {
        ("dir" if path.is_dir() else "file", path.stat().st_mode & 0o777)
        for path in [directory, *directory.rglob("*")]
    }


@pytest.mark.parametrize("umask", [0o002, 0o027])
def test_published_outputs_follow_the_umask(runs_table, tmp_path, umask, tokenized, corpus_dir):
    tokenizer = tokenized[320].parent / "v320/tokenizer.json"
    previous = os.umask(umask)
    try:
        estimate(runs_table, tmp_path / "fits")
        command = ["tokenize", "--params", str(REPO / "params.yaml"), "--corpus", str(corpus_dir)]
        main([*command, "--tokenizer", str(tokenizer), "--out", str(tmp_path / "v320")])
    finally:
        os.umask(previous)
    for out in ("fits", "v320"):
        assert modes(tmp_path / out) == {("dir", 0o777 & ~umask), ("file", 0o666 & ~umask)}, out
