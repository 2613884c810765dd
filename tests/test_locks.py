"""One writer per artifact: a stage holds a lock on its output while it writes it, so a second
writer of the same artifact (the other engine, an orphaned SLURM job) waits for it, touching
nothing: when the holder ran the same command and wrote the output meanwhile, the second one
succeeds without writing (a failure would let Snakemake delete that output as the failed
job's); when the wait (VOCABSCALE_LOCK_WAIT) runs out, it stops, naming the holder. A writer
that was killed leaves a lock the next one takes over.

Every test runs the real `vocabscale` commands (and Snakemake) as separate processes. The first
writer is stopped (SIGSTOP) as soon as it holds its lock, so that the second one meets it for
certain, then let go (SIGCONT) and checked to finish with complete outputs.
"""

from __future__ import annotations

import copy
import os
import signal
import socket
import subprocess
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from conftest import lock_holder, subprocess_env, wait_for, write_params

from vocabscale.io import OUTPUT_MARKER, read_json


def start(*argv: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        ["vocabscale", *argv],
        env=env or subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stopped_holder(process: subprocess.Popen, output: Path) -> dict:
    """Wait until `process` holds the lock of `output`, then stop it there."""
    holder = wait_for(
        lambda: (h := lock_holder(output)) and h["pid"] == process.pid and h,
        f"{output} to be locked by pid {process.pid}",
    )
    os.kill(process.pid, signal.SIGSTOP)
    return holder


def snapshot(*paths: Path) -> dict[str, bytes]:
    """Every file under `paths` (those that exist), with its bytes."""
    files = {}
    for path in paths:
        for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
            if item.is_file():
                files[str(item)] = item.read_bytes()
    return files


def waiting(seconds: float) -> dict[str, str]:
    """The environment of a second writer that waits `seconds` for the holder of its lock."""
    return {**subprocess_env(), "VOCABSCALE_LOCK_WAIT": str(seconds)}


def assert_refused(second: subprocess.CompletedProcess, output: Path, holder: dict) -> None:
    said = second.stdout + second.stderr
    assert second.returncode == 2, said[-3000:]
    assert f"{output} is being written by another process" in said, said[-3000:]
    assert "This one waited 1 s for it (VOCABSCALE_LOCK_WAIT)" in said, said[-3000:]
    assert f"pid {holder['pid']} on host {socket.gethostname()}" in said, said[-3000:]
    assert "SLURM job 4242" in said, said[-3000:]


@pytest.fixture
def params_file(tmp_path, tiny_params_dict) -> Path:
    params = copy.deepcopy(tiny_params_dict)
    params["tokenizer"].update(batch_documents=8, checkpoint_seconds=0)
    return write_params(tmp_path / "params.yaml", params)


def test_a_second_tokenize_of_the_same_v_stops_and_touches_nothing(
    corpus_dir, tokenized, tmp_path, params_file
):
    reference = tokenized[1280]
    tokenizer = reference.parent / "v1280" / "tokenizer.json"
    out = tmp_path / "tokens" / "v1280"
    partial = out.parent / ".v1280.partial"
    command = ("tokenize", "--params", str(params_file), "--corpus", str(corpus_dir))
    command += ("--tokenizer", str(tokenizer), "--out", str(out), "--threads", "1")
    # the first one runs as a SLURM job would: its message names the job
    first = start(*command, env={**subprocess_env(), "SLURM_JOB_ID": "4242"})
    try:
        holder = stopped_holder(first, out)
        before = snapshot(out, partial)
        second = subprocess.run(
            ["vocabscale", *command], env=waiting(1), capture_output=True, text=True
        )
        assert_refused(second, out, holder)
        assert snapshot(out, partial) == before
    finally:
        os.kill(first.pid, signal.SIGCONT)
    said = first.communicate(timeout=300)
    assert first.returncode == 0, said[1][-3000:]
    # the first finished undisturbed: the arrays of an uninterrupted run, and no lock left
    for name in ("train.bin", "validation.bin", "unigram_counts.npy", "stats.json"):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    assert not partial.exists() and lock_holder(out) is None
    assert not (out.parent / ".v1280.lock").exists()


def test_a_second_train_of_the_same_run_stops_and_touches_nothing(
    tokenized, tmp_path, params_file, tiny_params_dict
):
    out, checkpoints = tmp_path / "runs" / "a-v320", tmp_path / "checkpoints" / "a-v320"
    command = ("train", "--params", str(params_file), "--model", "a")
    command += ("--tokens", str(tokenized[320]), "--out", str(out))
    command += ("--checkpoint-dir", str(checkpoints))
    first = start(*command, env={**subprocess_env(), "SLURM_JOB_ID": "4242"})
    try:
        holder = stopped_holder(first, out)
        before = snapshot(out.parent, checkpoints)
        second = subprocess.run(
            ["vocabscale", *command], env=waiting(1), capture_output=True, text=True
        )
        assert_refused(second, out, holder)
        assert snapshot(out.parent, checkpoints) == before
    finally:
        os.kill(first.pid, signal.SIGCONT)
    said = first.communicate(timeout=300)
    assert first.returncode == 0, said[1][-3000:]
    evals = pd.read_csv(out / "evals.csv")
    assert len(evals) == tiny_params_dict["train"]["evals"]
    assert read_json(out / "run.json")["run_id"] == "a-v320"
    assert sorted(p.name for p in out.parent.iterdir()) == ["a-v320"]  # no temporaries, no lock


def test_a_snakemake_job_waits_for_the_same_command_and_keeps_its_output(
    corpus_dir, tokenized, tmp_path, params_file
):
    """Snakemake's view: its job finds the output locked by the same command (DVC's stage, an
    orphaned job), waits, and succeeds once that one has written the output: no failed job,
    so Snakemake deletes nothing, and the output is the holder's, complete."""
    reference = tokenized[1280]
    tokenizer = reference.parent / "v1280" / "tokenizer.json"
    command = f"vocabscale tokenize --params {params_file} --corpus {corpus_dir} "
    command += f"--tokenizer {tokenizer} --out tokens/v1280 --threads 1"
    (tmp_path / "Snakefile").write_text(
        textwrap.dedent(f"""\
            rule tokenize:
                output:
                    directory("tokens/v1280"),
                shell:
                    "{command}"
            """)
    )
    first = subprocess.Popen(
        command.split(), cwd=tmp_path, env=subprocess_env(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    out = tmp_path / "tokens" / "v1280"
    try:
        holder = stopped_holder(first, out)
        log = tmp_path / "snakemake.log"
        with open(log, "w") as stream:
            snakemake = subprocess.Popen(
                ["snakemake", "--cores", "1"], cwd=tmp_path, env=waiting(120), stdout=stream,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_for(lambda: "waiting up to 120 s" in log.read_text(), "the job to wait")
        assert lock_holder(out) == holder and not out.exists()
    finally:
        os.kill(first.pid, signal.SIGCONT)
    said = first.communicate(timeout=300)
    assert first.returncode == 0, said[1][-3000:]
    assert snakemake.wait(timeout=300) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert f"was written by pid {first.pid} on host" in text and "nothing left to do" in text
    assert "Removing output files of failed job" not in text
    for name in ("train.bin", "validation.bin", "unigram_counts.npy", "stats.json"):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    assert lock_holder(out) is None


def test_the_lock_of_a_killed_writer_is_taken_over(corpus_dir, tokenized, tmp_path, params_file):
    """SIGKILL leaves the lock file (with the dead holder's name) and a temporary behind; the
    next writer takes the lock over, clears the temporary and finishes."""
    reference = tokenized[640]
    out = tmp_path / "tokens" / "v640"
    command = ("tokenize", "--params", str(params_file), "--corpus", str(corpus_dir))
    command += ("--tokenizer", str(reference.parent / "v640" / "tokenizer.json"))
    command += ("--out", str(out), "--threads", "1")
    first = start(*command)
    holder = stopped_holder(first, out)
    first.kill()
    first.communicate()
    assert lock_holder(out) == holder
    left = out.parent / ".v640.x7k2m9qa.tmp"  # as a killed atomic write leaves it
    left.write_text("half")

    again = subprocess.run(
        ["vocabscale", *command], env=subprocess_env(), capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"from pid {first.pid} on host {socket.gethostname()}" in again.stderr
    assert not left.exists() and lock_holder(out) is None
    for name in ("train.bin", "validation.bin", "unigram_counts.npy", "stats.json"):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name


def test_a_killed_prepare_corpus_leaves_nothing_behind(tmp_path, tiny_params_dict, corpus_dir):
    """Its temporary directory is removed by the next run, which writes the same corpus."""
    params = write_params(tmp_path / "params.yaml", tiny_params_dict)
    out = tmp_path / "results" / "corpus"
    command = ("prepare-corpus", "--params", str(params), "--out", str(out))
    first = start(*command)
    temporary = wait_for(
        lambda: next(out.parent.glob(".corpus.*.tmp"), None), "the corpus's temporary directory"
    )
    first.kill()
    first.communicate()
    assert temporary.is_dir() and not out.exists()

    again = subprocess.run(
        ["vocabscale", *command], env=subprocess_env(), capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert sorted(p.name for p in out.parent.iterdir()) == ["corpus"]
    assert snapshot_relative(out) == snapshot_relative(corpus_dir)
    assert read_json(out / OUTPUT_MARKER)["written_by"] == "vocabscale prepare-corpus"


def snapshot_relative(directory: Path) -> dict[str, bytes]:
    """Every file's bytes but the marker's (which names the command, here or the library)."""
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != OUTPUT_MARKER
    }
