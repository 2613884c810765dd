"""Runs of several processes: two torchrun agents on this host as two nodes, SIGTERM to the
torchrun of a two-process run (every rank stops at one step, the state is saved, the command
exits 75 and the run resumes to the same numbers), the ranks reading the resume state apart
from rank 0's writes and stopping together when it cannot be read, and FSDP (sharded weights
and optimizer, sharded checkpoints) doing the same. CPU processes talking over gloo."""

from __future__ import annotations

import copy
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import write_params
from test_train import VOCAB, assert_same_run, cut_short_state, run_to_completion, train_command

from vocabscale.config import load_params
from vocabscale.io import read_json
from vocabscale.preemption import grace_seconds, state_bytes
from vocabscale.sweep import model_specs
from vocabscale.train.distributed import PREEMPTED, torchrun_command
from vocabscale.train.launch import EXIT_PREEMPTED
from vocabscale.train.model import Llama
from vocabscale.train.sharded import SHARDS

STEPS = 40  # the two-process run SIGTERM interrupts
#: Where a worker says it stopped at SIGTERM: a step of the main trajectory or of a wsd branch
STOPPED = r"SIGTERM (at step \d+|in the cooldown branch .* of \d+)"


@pytest.fixture(scope="module")
def params_file(tmp_path_factory, tiny_params_dict) -> Path:
    params = copy.deepcopy(tiny_params_dict)
    shape = {"n_layer": 1, "n_head": 2, "d_model": 32, "ffn": 64}
    params["models"] = {
        "one": {**shape, "train_tokens": 2048 * 12},
        "two_nodes": {**shape, "train_tokens": 2048 * 12, "nodes": 2},
        "ddp": {**shape, "train_tokens": 2048 * STEPS, "gpus": 2},
        # FSDP over two processes: two blocks, each sharded on its own
        "fsdp": {**shape, "n_layer": 2, "train_tokens": 2048 * STEPS, "gpus": 2},
        "fsdp_one": {**shape, "n_layer": 2, "train_tokens": 2048 * STEPS},
    }
    params["models"]["fsdp"]["parallel"] = "fsdp"
    params["train"].update(
        micro_batch_size=32, evals=4, checkpoint_every=10, device="cpu", threads=1
    )
    return write_params(tmp_path_factory.mktemp("params") / "params.yaml", params)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def assert_evaluates_like(run: Path, reference: Path) -> None:
    """Same batches and updates on any number of processes: the same evaluations, but for
    the order of additions (DDP's tolerance)."""
    ours, theirs = pd.read_csv(run / "evals.csv"), pd.read_csv(reference / "evals.csv")
    assert list(ours["step"]) == list(theirs["step"])
    np.testing.assert_allclose(ours["eval_ce_sum"], theirs["eval_ce_sum"], rtol=1e-5)


def test_two_agents_on_one_host_train_like_one_process(tmp_path, params_file, tokenized):
    """`models.<name>.nodes: 2`: one torchrun agent per node meeting over c10d, as `srun
    torchrun` starts them on a cluster; here both "nodes" are this host."""
    command = train_command(params_file, "two_nodes", tokenized[VOCAB], tmp_path / "nodes")
    endpoint = f"127.0.0.1:{free_port()}"
    agent = torchrun_command(2, 1, command[3:], 60, endpoint, "two-nodes-test")
    agents = [subprocess.Popen(agent, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for process in agents:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-3000:]
    run_to_completion(params_file, "one", tokenized[VOCAB], tmp_path / "one")
    assert read_json(tmp_path / "nodes" / "run" / "run.json")["processes"] == 2
    assert_evaluates_like(tmp_path / "nodes" / "run", tmp_path / "one" / "run")


def test_several_nodes_outside_slurm_are_refused_with_the_agents_command(
    tmp_path, params_file, tokenized
):
    command = train_command(params_file, "two_nodes", tokenized[VOCAB], tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2
    assert "torchrun --nnodes=2 --rdzv-backend=c10d" in result.stderr
    assert not (tmp_path / "run").exists()


def torchrun_of(launcher: subprocess.Popen, timeout: float = 120) -> int:
    """The pid of the torchrun that `vocabscale train` started."""
    children = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in children.read_text().split():
            if "torch.distributed.run" in Path(f"/proc/{pid}/cmdline").read_text():
                return int(pid)
        assert launcher.poll() is None, "vocabscale train ended before starting torchrun"
        time.sleep(0.05)
    raise AssertionError("no torchrun within the timeout")


@pytest.fixture(scope="module")
def two_processes_uninterrupted(tmp_path_factory, params_file, tokenized) -> Path:
    root = tmp_path_factory.mktemp("ddp-uninterrupted")
    run_to_completion(params_file, "ddp", tokenized[VOCAB], root)
    return root / "run"


def sigterm_to_torchrun_once_saved(
    params_file: Path, model: str, tokens: Path, root: Path
) -> float:
    """Start `vocabscale train` of `model` and SIGTERM its torchrun once the run has saved its
    state; the command must exit 75 with no worker killed. Returns the seconds it took."""
    state = root / "checkpoint" / "state.pt"
    stderr = root / "stderr.txt"
    with open(stderr, "w") as sink:
        launcher = subprocess.Popen(train_command(params_file, model, tokens, root), stderr=sink)
    try:
        torchrun = torchrun_of(launcher)
        deadline = time.monotonic() + 300
        while not state.exists():
            assert launcher.poll() is None, stderr.read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.05)
        signalled = time.monotonic()
        os.kill(torchrun, signal.SIGTERM)  # torchrun only, not vocabscale train
        status = launcher.wait(timeout=300)
        took = time.monotonic() - signalled
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert status == EXIT_PREEMPTED, stderr.read_text()[-3000:]
    assert "forcefully" not in stderr.read_text()  # the workers left by themselves
    return took


def test_sigterm_to_torchrun_stops_every_rank_at_one_step_and_resumes(
    tmp_path, params_file, tokenized, two_processes_uninterrupted
):
    state = tmp_path / "checkpoint" / "state.pt"
    took = sigterm_to_torchrun_once_saved(params_file, "ddp", tokenized[VOCAB], tmp_path)
    # within the grace window, the workers leaving by themselves (torchrun killed none)
    spec = model_specs(load_params(params_file))["ddp"]
    assert took < grace_seconds(spec.shape, VOCAB, load_params(params_file)["cluster"])
    # every rank stopped at the same step, the one the complete checkpoint holds (or, in a
    # cooldown branch, at the same step of the branch, saved beside it)
    log = (tmp_path / "train.log").read_text()
    stopped = re.findall(STOPPED, log)
    assert len(stopped) == 2 and len(set(stopped)) == 1, log[-3000:]
    saved = torch.load(state, weights_only=True)
    assert saved["step"] == read_json(state.parent / PREEMPTED)["step"]
    assert stopped[0] == f"at step {saved['step']}" or (state.parent / "branch.pt").exists()
    assert 0 < saved["step"] < STEPS and saved["processes"] == 2
    assert not (tmp_path / "run").exists()

    run_to_completion(params_file, "ddp", tokenized[VOCAB], tmp_path)
    assert f"from step {saved['step']} of {STEPS}" in (tmp_path / "train.log").read_text()
    assert_same_run(tmp_path / "run", two_processes_uninterrupted)


def test_the_state_is_the_size_the_grace_window_is_made_for(
    params_file, two_processes_uninterrupted, tokenized
):
    """The grace window is computed from an estimate of the resume state's size: it is the
    size of a real one (the records and RNG states add a few kB)."""
    spec = model_specs(load_params(params_file))["ddp"]
    written = (two_processes_uninterrupted.parent / "checkpoint" / "state.pt").stat().st_size
    estimate = state_bytes(spec.shape, VOCAB)
    assert estimate <= written < estimate + 64_000


# --- reading the resume state -----------------------------------------------------------------

#: A script of two gloo processes that watches when ranks read the state and rank 0 writes it.
STATE_READS = Path(__file__).with_name("ddp_state_reads.py")


@pytest.fixture(scope="module")
def state_reads(tmp_path_factory, params_file, tokenized) -> dict[int, dict]:
    """What each rank of `ddp_state_reads.py` saw: a wsd run, then resumes that fail on rank 1."""
    root = tmp_path_factory.mktemp("state-reads")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node=2", str(STATE_READS), str(params_file), "one"]
    result = subprocess.run(
        [*command, str(tokenized[VOCAB]), str(root)], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return {rank: read_json(root / f"rank{rank}.json") for rank in range(2)}


def test_under_ddp_no_rank_reads_a_state_while_rank_0_replaces_it(state_reads):
    """wsd: at each evaluation point every rank reads the main trajectory's state.pt back and
    rank 0 then saves it again; rank 0 replaces it only once every rank is done with it (a
    memory-mapped file replaced under a reader is SIGBUS or ESTALE on NFS)."""
    for rank, seen in state_reads.items():
        assert seen["points"] == 9, rank
        assert seen["order"] == [], rank


def test_a_state_one_rank_cannot_read_stops_every_rank(state_reads):
    """Rank 1 cannot read state.pt (EIO), or does not see it: every rank raises, naming the
    file, the rank and the cause; none resumes or starts afresh alone (or waits alone in a
    collective)."""
    for seen in state_reads.values():
        assert seen["unreadable"].startswith("UnreadableState: "), seen["unreadable"]
        cause = "state.pt exists but cannot be read (on rank 1: OSError: [Errno 5]"
        assert cause in seen["unreadable"]
        assert "rank(s) [1] do not see it" in seen["unseen"], seen["unseen"]


# --- FSDP ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fsdp_uninterrupted(tmp_path_factory, params_file, tokenized) -> Path:
    root = tmp_path_factory.mktemp("fsdp-uninterrupted")
    run_to_completion(params_file, "fsdp", tokenized[VOCAB], root)
    return root / "run"


def test_fsdp_trains_like_one_process_and_writes_a_plain_model(
    tmp_path, params_file, tokenized, fsdp_uninterrupted
):
    run_to_completion(params_file, "fsdp_one", tokenized[VOCAB], tmp_path)
    assert_evaluates_like(fsdp_uninterrupted, tmp_path / "run")
    run = read_json(fsdp_uninterrupted / "run.json")
    assert (run["processes"], run["parallel"]) == (2, "fsdp")
    assert run["total_params"] == read_json(tmp_path / "run" / "run.json")["total_params"]
    assert "FSDP" in (fsdp_uninterrupted.parent / "train.log").read_text()
    # model.pt is the whole model, gathered: it loads into a plain single-process model
    spec = model_specs(load_params(params_file))["fsdp"]
    model = Llama(spec.shape, VOCAB, 32)
    model.load_state_dict(torch.load(fsdp_uninterrupted / "model.pt", weights_only=True))
    single = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    for name, weight in model.state_dict().items():
        torch.testing.assert_close(weight, single[name], rtol=1e-4, atol=1e-5)


def test_fsdp_checkpoints_are_shards_and_resume_to_the_same_run(
    tmp_path, params_file, tokenized, fsdp_uninterrupted
):
    """SIGTERM to torchrun: every rank writes its shards, rank 0 the file naming them; the
    resumed run is the uninterrupted one, bit for bit. The shards of a save that a kill cut
    short (no file names them) are ignored and removed."""
    sigterm_to_torchrun_once_saved(params_file, "fsdp", tokenized[VOCAB], tmp_path)
    checkpoint = tmp_path / "checkpoint"
    log = (tmp_path / "train.log").read_text()
    stopped = re.findall(STOPPED, log)
    assert len(stopped) == 2 and len(set(stopped)) == 1, log[-3000:]
    named = set()
    for name in ("state.pt", "branch.pt"):
        if (checkpoint / name).exists():
            saved = torch.load(checkpoint / name, weights_only=True)
            assert "model" not in saved and (checkpoint / saved[SHARDS] / ".metadata").exists()
            named.add(saved[SHARDS])
    # one file of shards per process, and no directory that no checkpoint names
    assert {path.name for path in checkpoint.glob("*.dcp")} == named
    for directory in named:
        assert len(list((checkpoint / directory).glob("*.distcp"))) == 2
    assert read_json(checkpoint / PREEMPTED)["step"] > 0
    cut_short = checkpoint / "state.0badc0de.dcp"
    cut_short.mkdir()
    (cut_short / "__0_0.distcp").write_bytes(b"half a shard")

    run_to_completion(params_file, "fsdp", tokenized[VOCAB], tmp_path)
    assert "resuming" in (tmp_path / "train.log").read_text()
    assert not cut_short.exists()
    assert_same_run(tmp_path / "run", fsdp_uninterrupted)


def test_an_fsdp_state_that_cannot_be_read_stops_every_rank_and_keeps_its_shards(
    tmp_path, params_file, tokenized
):
    """The shards of a state.pt that cannot be read are not "unnamed leftovers": every rank
    stops at once, the launcher fails (not 75: nothing was saved to resume), and the checkpoint
    directory is as it was."""
    checkpoint = tmp_path / "checkpoint"
    shards = checkpoint / "state.0123abcd.dcp"
    shards.mkdir(parents=True)
    (shards / "__0_0.distcp").write_bytes(b"a shard")
    cut_short_state(checkpoint / "state.pt", {"fingerprint": "x", SHARDS: shards.name})
    before = {path: path.read_bytes() for path in checkpoint.rglob("*") if path.is_file()}
    command = train_command(params_file, "fsdp", tokenized[VOCAB], tmp_path)
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stderr[-3000:]  # torchrun's failure
    log = (tmp_path / "train.log").read_text()
    assert log.count(f"{checkpoint / 'state.pt'} exists but cannot be read") == 2, log[-3000:]
    assert {path: path.read_bytes() for path in checkpoint.rglob("*") if path.is_file()} == before
    assert not (tmp_path / "run").exists()
