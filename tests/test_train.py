"""Training: safe to kill (SIGKILL resumes, SIGTERM checkpoints and exits non-zero), divergence
is recorded rather than hidden, and several processes train on the same data as one.

The kill tests run the real `vocabscale train` command in a subprocess and signal it while it
trains; every run uses one CPU thread so that runs in different processes agree to the bit.
"""

import copy
import dataclasses
import errno
import itertools
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from conftest import files_of, tokenizer_settings, write_params

import vocabscale
from vocabscale.accounting import ModelShape
from vocabscale.config import ParamsError, defaults, validate_params
from vocabscale.corpus.shards import train_shards
from vocabscale.io import read_json, read_tokens
from vocabscale.sweep import model_specs
from vocabscale.tokenizer.one_job import tokenize_corpus
from vocabscale.train import checkpoint as checkpoint_module
from vocabscale.train import checkpointer as checkpointer_module
from vocabscale.train import loop as loop_module
from vocabscale.train.checkpoint import UnreadableState, code_digest, fingerprint, read_state
from vocabscale.train.config import TrainConfig
from vocabscale.train.data import RunData, WindowOrder, training_batch
from vocabscale.train.distributed import Process
from vocabscale.train.evaluate import EvalBatching, evaluate
from vocabscale.train.launch import EXIT_PREEMPTED
from vocabscale.train.loop import Preempted, Trainer, train_run
from vocabscale.train.model import Llama
from vocabscale.train.plan import RunPlan
from vocabscale.train.schedule import (
    cooldown_rate,
    eval_points,
    eval_steps,
    learning_rate,
    trained_steps,
)
from vocabscale.train.sharded import SHARDS, remove_unnamed
from vocabscale.train.step import accumulate_gradients

VOCAB = 320
STEPS = 80  # long enough to be caught mid-run, short enough for a test


@pytest.fixture(scope="module")
def params_file(tmp_path_factory, tiny_params_dict) -> Path:
    params = copy.deepcopy(tiny_params_dict)
    shape = {"n_layer": 1, "n_head": 2, "d_model": 32, "ffn": 64}
    params["models"] = {
        # 80 steps of 2048 tokens, two micro-batches of 32 sequences each
        "k": {**shape, "train_tokens": 2048 * STEPS},
        # the same shape on two processes (gloo on CPU), and on one for comparison
        "ddp": {**shape, "train_tokens": 2048 * 12, "gpus": 2},
        "one": {**shape, "train_tokens": 2048 * 12},
    }
    params["train"].update(
        micro_batch_size=32, evals=4, checkpoint_every=10, device="cpu", threads=1
    )
    return write_params(tmp_path_factory.mktemp("params") / "params.yaml", params)


def load(params_file: Path) -> dict:
    return validate_params(yaml.safe_load(params_file.read_text()), str(params_file))


def train_command(params: Path, model: str, tokens: Path, root: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "vocabscale",
        "train",
        "--params",
        str(params),
        "--model",
        model,
        "--tokens",
        str(tokens),
        "--out",
        str(root / "run"),
        "--checkpoint-dir",
        str(root / "checkpoint"),
        "--log",
        str(root / "train.log"),
    ]


def run_to_completion(params: Path, model: str, tokens: Path, root: Path) -> None:
    result = subprocess.run(
        train_command(params, model, tokens, root), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]


def checkpointed_step(root: Path) -> int:
    state = root / "checkpoint" / "state.pt"
    return torch.load(state, weights_only=True)["step"] if state.exists() else 0


def start_and_signal(params: Path, tokens: Path, root: Path, signum: int) -> int:
    """Start a run, wait until it has checkpointed at least once, signal it mid-run and return
    its exit status."""
    process = subprocess.Popen(
        train_command(params, "k", tokens, root),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while not (root / "checkpoint" / "state.pt").exists():
            assert process.poll() is None, "the run stopped before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.05)
        process.send_signal(signum)
        return process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()


def assert_same_run(ours: Path, reference: Path) -> None:
    for name in ("evals.csv", "history.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(ours / name), pd.read_csv(reference / name))
    a = torch.load(ours / "model.pt", weights_only=True)
    b = torch.load(reference / "model.pt", weights_only=True)
    assert all(torch.equal(a[key], b[key]) for key in b)  # bit for bit


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, params_file, tokenized) -> Path:
    root = tmp_path_factory.mktemp("uninterrupted")
    run_to_completion(params_file, "k", tokenized[VOCAB], root)
    return root / "run"


def test_an_uninterrupted_run_records_every_evaluation(uninterrupted):
    evals = pd.read_csv(uninterrupted / "evals.csv")
    run = read_json(uninterrupted / "run.json")
    assert list(evals["step"]) == [20, 40, 60, 80]
    assert (evals["eval_ce_sum"].diff().dropna() < 0).all()  # it learns
    assert run["steps"] == STEPS and not run["diverged"]
    assert run["non_vocab_params"] == 1 * (4 * 32**2 + 3 * 32 * 64 + 2 * 32) + 32
    assert run["vocab_params"] == VOCAB * 32


def test_a_run_killed_mid_way_resumes_to_the_same_numbers(
    tmp_path, params_file, tokenized, uninterrupted
):
    status = start_and_signal(params_file, tokenized[VOCAB], tmp_path, signal.SIGKILL)
    assert status == -signal.SIGKILL
    killed_at = checkpointed_step(tmp_path)
    assert 0 < killed_at < STEPS
    assert not (tmp_path / "run").exists()  # nothing half-written where the engine looks

    run_to_completion(params_file, "k", tokenized[VOCAB], tmp_path)
    assert f"from step {killed_at} of {STEPS}" in (tmp_path / "train.log").read_text()
    assert_same_run(tmp_path / "run", uninterrupted)


def test_sigterm_checkpoints_and_exits_non_zero_then_resumes(
    tmp_path, params_file, tokenized, uninterrupted
):
    status = start_and_signal(params_file, tokenized[VOCAB], tmp_path, signal.SIGTERM)
    assert status == EXIT_PREEMPTED
    stopped_at = checkpointed_step(tmp_path)
    assert 0 < stopped_at < STEPS
    assert "SIGTERM at step" in (tmp_path / "train.log").read_text()
    assert not (tmp_path / "run").exists()

    run_to_completion(params_file, "k", tokenized[VOCAB], tmp_path)
    assert_same_run(tmp_path / "run", uninterrupted)


def test_a_nan_marks_the_run_diverged_and_keeps_earlier_records(tmp_path, params_file, tokenized):
    params = load(params_file)
    config = TrainConfig.from_params({**params["train"], "threads": 0})
    spec = model_specs(params)["k"]
    run = train_run(
        spec, tokenized[VOCAB], config, tmp_path / "run", tmp_path / "ckpt", inject_nan_at_step=41
    )
    assert run["diverged"] and run["diverged_at_step"] == 41
    evals = pd.read_csv(tmp_path / "run" / "evals.csv")
    assert list(evals["step"]) == [20, 40]  # the evaluations before the NaN, not after
    assert np.isfinite(evals["eval_ce_sum"]).all()
    assert read_json(tmp_path / "run" / "run.json")["diverged"] is True
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert history["step"].max() == 41 and np.isfinite(history["train_loss"]).all()


def test_two_processes_train_on_the_same_data_and_evaluate_like_one(
    tmp_path, params_file, tokenized, one_thread
):
    run_to_completion(params_file, "ddp", tokenized[VOCAB], tmp_path / "ddp")
    run_to_completion(params_file, "one", tokenized[VOCAB], tmp_path / "one")
    ddp, one = tmp_path / "ddp" / "run", tmp_path / "one" / "run"
    assert read_json(ddp / "run.json")["processes"] == 2
    # Same batches, same updates: only the order of additions differs.
    a, b = pd.read_csv(ddp / "evals.csv"), pd.read_csv(one / "evals.csv")
    assert list(a["step"]) == list(b["step"])
    np.testing.assert_allclose(a["eval_ce_sum"], b["eval_ce_sum"], rtol=1e-5)
    # The evaluation split over two processes gives one process's number to the bit.
    model = Llama(model_specs(load(params_file))["ddp"].shape, VOCAB, context=32)
    model.load_state_dict(torch.load(ddp / "model.pt", weights_only=True))
    validation = np.asarray(read_tokens(tokenized[VOCAB] / "validation.bin", VOCAB))
    ce_sum, count = evaluate(
        model, validation, EvalBatching(32, 16, 8192), torch.autocast("cpu", enabled=False)
    )
    assert count == a["eval_tokens"].iloc[-1]
    assert f"{ce_sum:.10g}" == f"{a['eval_ce_sum'].iloc[-1]:.10g}"


def read_windows(tokens, order, steps, sequences, world) -> list[int]:
    """The windows the global batches of `steps` steps hold, put together from `world` ranks."""
    read = []
    for step in range(steps):
        shards = [training_batch(tokens, order, step, sequences, r, world) for r in range(world)]
        inputs = torch.cat([x for x, _ in shards])
        targets = torch.cat([y for _, y in shards])
        assert len(inputs) == sequences and torch.equal(inputs[:, 1:], targets[:, :-1])
        read += [int(x[0]) // order.context for x in inputs]
    return read


def test_every_window_is_read_once_per_epoch_over_one_and_two_ranks():
    context, sequences = 16, 8
    tokens = np.arange(1000, dtype=np.uint16)  # 62 windows of 17 tokens at a stride of 16
    order = WindowOrder(len(tokens), context, seed=3)
    assert order.windows == 62
    steps = -(-3 * order.windows // sequences)  # three epochs, batches straddling their ends
    one, two = (read_windows(tokens, order, steps, sequences, world) for world in (1, 2))
    assert two == one  # two ranks read the global batches one process reads
    epochs = [one[i : i + order.windows] for i in range(0, 3 * order.windows, order.windows)]
    for epoch in epochs:
        assert sorted(epoch) == list(range(order.windows))  # each window exactly once
    assert epochs[0] != epochs[1] != epochs[2]  # a new order every epoch
    # every token but the first is a target exactly once per epoch
    targets = np.concatenate([tokens[s + 1 : s + context + 1] for s in order.starts(0, 62)])
    assert sorted(targets) == list(range(1, 62 * context + 1))
    assert order.epochs(93) == pytest.approx(1.5)


def test_the_data_order_is_identical_after_a_resume():
    tokens = np.arange(5000, dtype=np.uint16)
    uninterrupted = WindowOrder(len(tokens), 32, seed=7)
    batches = [training_batch(tokens, uninterrupted, step, 16)[0] for step in range(40)]
    for resumed_at in (0, 9, 17, 33):  # a fresh process, as a resumed run would start
        resumed = WindowOrder(len(tokens), 32, seed=7)
        for step in range(resumed_at, 40):
            assert torch.equal(training_batch(tokens, resumed, step, 16)[0], batches[step])
    other_seed = WindowOrder(len(tokens), 32, seed=8)
    assert not torch.equal(training_batch(tokens, other_seed, 0, 16)[0], batches[0])


def test_gradient_accumulation_equals_one_large_batch():
    torch.manual_seed(0)
    model = Llama(ModelShape(2, 2, 16, 32), vocab_size=64, context=8, head_chunk_tokens=5)
    tokens = torch.randint(0, 64, (12, 9))
    grads = []
    fp32 = torch.autocast("cpu", enabled=False)
    for micro_batch in (12, 5, 1):
        model.zero_grad()
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        loss = accumulate_gradients(model, inputs, targets, micro_batch, fp32, 1 / targets.numel())
        grads.append((loss.item(), [p.grad.clone() for p in model.parameters()]))
    for loss, grad in grads[1:]:
        assert loss == pytest.approx(grads[0][0], rel=1e-6)
        for ours, reference in zip(grad, grads[0][1]):
            torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-7)


def config_with(**settings) -> TrainConfig:
    """A TrainConfig with the defaults, a peak rate of 1 and `settings`."""
    required = {"seed": 0, "context": 8, "batch_tokens": 8, "micro_batch_size": 1, "lr": 1.0}
    return TrainConfig.from_params({**defaults("train"), **required, "evals": 20, **settings})


def test_each_schedule_s_rate_curve():
    rates = {
        name: [learning_rate(step, 1000, config_with(schedule=name)) for step in range(1000)]
        for name in ("constant", "cosine", "wsd")
    }
    for curve in rates.values():  # a linear warmup over 10% of the steps
        assert curve[0] == pytest.approx(0.01) and curve[99] == pytest.approx(1.0)
        assert all(a < b for a, b in itertools.pairwise(curve[:100]))
    assert rates["constant"][100:] == [1.0] * 900  # the authors' trainer
    # a warmup in tokens is the same whatever the run's length (8 tokens per step here)
    fixed = config_with(warmup_tokens=400)
    assert [learning_rate(s, 1000, fixed) for s in range(60)] == [
        learning_rate(s, 100, fixed) for s in range(60)
    ]
    assert learning_rate(49, 1000, fixed) == 1.0 > learning_rate(48, 1000, fixed)
    assert rates["wsd"] == rates["constant"]  # wsd's main trajectory
    cosine = rates["cosine"][99:]
    assert cosine[-1] == pytest.approx(0.1, abs=1e-4)  # down to min_lr_ratio
    assert cosine[451] == pytest.approx(0.55, abs=1e-3)  # half way down at half the decay
    assert all(a >= b for a, b in itertools.pairwise(cosine))
    # a wsd branch: from the main trajectory's rate down to zero in the chosen shape, each step
    # at the decay's value half way through it
    for shape, at_half in (("linear", 0.5), ("1-sqrt", 1 - 0.5**0.5), ("cosine", 0.5)):
        branch = [cooldown_rate(0.8, step, 10, shape) for step in range(10)]
        assert branch[0] < 0.8 and branch[-1] > 0
        assert (branch[4] + branch[5]) / 2 == pytest.approx(0.8 * at_half, rel=0.01)
        assert all(a > b for a, b in itertools.pairwise(branch))
    assert sum(cooldown_rate(0.8, step, 10, "linear") for step in range(10)) == pytest.approx(4)
    assert cooldown_rate(0.8, 0, 1, "linear") == pytest.approx(0.4)  # one step decays too


def test_evaluation_points_of_each_schedule():
    # the paper's 20 points, evenly spaced in tokens, the last at the end of the main trajectory
    for name in ("constant", "cosine"):
        points = eval_points(1000, 20, name, 0.2)
        assert [p.steps for p in points] == list(range(50, 1001, 50)) == eval_steps(1000, 20)
        assert all(p.branch_from == p.steps for p in points) and trained_steps(points) == 1000
    # wsd: the point of D tokens branches off at D / 1.2 and cools down over the rest, so it has
    # seen exactly D tokens; every branch's tokens are trained on top of the main trajectory's
    points = eval_points(1000, 5, "wsd", 0.2)
    assert [p.steps for p in points] == [200, 400, 600, 800, 1000]
    assert [p.branch_from for p in points] == [167, 333, 500, 667, 833]
    assert trained_steps(points) == 833 + 33 + 67 + 100 + 133 + 167
    # a tiny run keeps at least one step of cooldown per point
    assert [p.cooldown_steps for p in eval_points(4, 4, "wsd", 0.2)] == [1, 1, 1, 1]


DIGEST = {"train": "a" * 64, "validation": "b" * 64}  # what the tokenize stage records


def test_checkpoints_are_kept_across_device_and_thread_changes_only(tiny_params_dict):
    params = validate_params(copy.deepcopy(tiny_params_dict))
    spec = model_specs(params)["a"]
    config = TrainConfig.from_params(params["train"])

    def changed(**kwargs) -> str:
        settings = TrainConfig.from_params({**params["train"], **kwargs})
        return fingerprint(spec, 320, settings, DIGEST, "fp32")

    same = fingerprint(spec, 320, config, DIGEST, "fp32")
    assert changed(threads=7) == changed(device="cuda") == changed(compile=True) == same
    assert changed(lr=1e-4) != same and changed(seed=1) != same
    assert changed(schedule="cosine") != same and changed(cooldown_fraction=0.1) != same
    assert fingerprint(spec, 640, config, DIGEST, "fp32") != same
    # keyed on the precision `auto` resolved to: a bf16 state from a GPU is not resumed in fp32
    assert fingerprint(spec, 320, config, DIGEST, "bf16") != same
    # and on the content of the token arrays, not their length
    assert fingerprint(spec, 320, config, {**DIGEST, "train": "c" * 64}, "fp32") != same


def test_a_change_to_the_training_code_means_starting_afresh(
    tmp_path, monkeypatch, tiny_params_dict
):
    package = tmp_path / "vocabscale"
    shutil.copytree(Path(vocabscale.__file__).parent, package)
    before = code_digest(package)
    assert before == code_digest()
    with open(package / "train" / "model.py", "a") as source:
        source.write("\n# a fix\n")
    assert code_digest(package) != before
    # and the digest is part of what a checkpoint must match
    params = validate_params(copy.deepcopy(tiny_params_dict))
    spec, config = model_specs(params)["a"], TrainConfig.from_params(params["train"])
    same = fingerprint(spec, 320, config, DIGEST, "fp32")
    monkeypatch.setattr(checkpoint_module, "code_digest", lambda: code_digest(package))
    assert fingerprint(spec, 320, config, DIGEST, "fp32") != same


def test_a_state_that_cannot_be_read_is_an_error_naming_it_and_the_cause(tmp_path, monkeypatch):
    path = tmp_path / "state.pt"
    assert read_state(path, mmap=False) is None  # no state: the run starts afresh
    torch.save({"fingerprint": "x"}, path)
    assert read_state(path, mmap=False)["fingerprint"] == "x"
    cut_short_state(path, {"fingerprint": "x"})
    with pytest.raises(UnreadableState, match=r"state\.pt exists but cannot be read \(Runtime"):
        read_state(path, mmap=False)
    for code in (errno.EIO, errno.ESTALE, errno.EACCES):  # a failing disk, NFS, a permission
        monkeypatch.setattr(torch, "load", raising(OSError(code, os.strerror(code))))
        with pytest.raises(UnreadableState, match=rf"\(\w+Error: \[Errno {code}\]") as error:
            read_state(path, mmap=True)
        assert f"Nothing in {tmp_path} was removed or overwritten" in str(error.value)
        assert f"move {path} out of the way (or delete it)" in str(error.value)
    monkeypatch.undo()
    torch.save([1, 2], path)  # a file of another format
    with pytest.raises(UnreadableState, match="it holds a list, not a resume state"):
        read_state(path, mmap=False)


def cut_short_state(path: Path, state: dict) -> None:
    """Write `state` with a tensor of 1000 numbers to `path`, then cut the file short (as a
    full disk would)."""
    torch.save({**state, "model": {"w": torch.zeros(1000)}}, path)
    path.write_bytes(path.read_bytes()[:500])


def raising(error: Exception) -> Callable:
    def fail(*args, **kwargs):
        raise error

    return fail


def test_a_run_whose_state_cannot_be_read_stops_and_touches_nothing(
    tmp_path, params_file, tokenized
):
    """Not "no state": the command fails (not with 75, which means "run me again"), naming the
    file and the cause, before anything in the checkpoint directory is removed or overwritten;
    once the state is moved away, the run trains from the start."""
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    cut_short_state(checkpoint / "state.pt", {"fingerprint": "x"})
    (checkpoint / ".state.pt.abcd1234.tmp").write_bytes(b"what a kill left")
    before = files_of(checkpoint)
    command = train_command(params_file, "one", tokenized[VOCAB], tmp_path)
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"{checkpoint / 'state.pt'} exists but cannot be read (RuntimeError: " in result.stderr
    assert files_of(checkpoint) == before
    assert not (tmp_path / "run").exists()

    (checkpoint / "state.pt").rename(tmp_path / "state.pt.damaged")
    run_to_completion(params_file, "one", tokenized[VOCAB], tmp_path)
    assert read_json(tmp_path / "run" / "run.json")["steps"] == 12


def test_shards_are_kept_while_a_state_cannot_be_read(tmp_path):
    """FSDP: at a start, the directories of shards no state names are leftovers of a cut save,
    removed; not while a state cannot be read: they may be its shards."""
    state, branch = tmp_path / "state.pt", tmp_path / "branch.pt"
    named, unnamed = tmp_path / "state.0000aaaa.dcp", tmp_path / "state.1111bbbb.dcp"
    named.mkdir()
    unnamed.mkdir()
    torch.save({SHARDS: named.name}, state)
    branch.write_bytes(b"not what torch.save writes")
    remove_unnamed(tmp_path, [state, branch])
    assert named.exists() and unnamed.exists()
    branch.unlink()
    remove_unnamed(tmp_path, [state, branch])
    assert named.exists() and not unnamed.exists()


def test_gpus_must_share_the_batch_evenly(tiny_params_dict):
    params = copy.deepcopy(tiny_params_dict)
    params["models"]["a"]["gpus"] = 3  # 2048 / 32 = 64 sequences per step
    with pytest.raises(ParamsError, match=r"models\.a\.gpus"):
        validate_params(params)


def trainer(params_file: Path, model: str, tokens: Path, checkpoint_dir: Path, **train) -> Trainer:
    """A Trainer of `model` on one CPU process, with `train` settings changed."""
    params = load(params_file)
    config = TrainConfig.from_params({**params["train"], **train})
    data = RunData.load(tokens, config.context)
    spec = model_specs(params)[model]
    plan = RunPlan.make(spec, data, config, Process(0, 1, torch.device("cpu")))
    return Trainer(plan, checkpoint_dir)


def assert_same_training_state(ours: dict, reference: dict) -> None:
    """Weights and optimizer state equal to the bit."""
    for key, tensor in reference["model"].items():
        assert torch.equal(ours["model"][key], tensor), key
    optimizer, expected = ours["optimizer"], reference["optimizer"]
    assert optimizer["param_groups"] == expected["param_groups"]
    for index, state in expected["state"].items():
        for key, tensor in state.items():
            assert torch.equal(optimizer["state"][index][key], tensor), (index, key)


def test_a_wsd_branch_leaves_the_main_trajectory_bit_identical(
    tmp_path, params_file, tokenized, monkeypatch, one_thread
):
    """The main trajectory of a wsd run, after each cooldown branch (a copy that trained,
    decayed and was evaluated), is the run that never branched: the same warmup and peak rate
    (the constant schedule), to the bit."""
    saved = []  # every state the wsd run saves: its main trajectory but for the very last
    save_state = checkpointer_module.save_state

    def keep(path: Path, state: dict) -> None:
        if path.name == "state.pt":
            saved.append(copy.deepcopy(state))
        save_state(path, state)

    monkeypatch.setattr(checkpointer_module, "save_state", keep)
    wsd = trainer(params_file, "k", tokenized[VOCAB], tmp_path / "wsd", schedule="wsd")
    wsd.train()
    points = wsd.plan.points
    assert [p.cooldown_steps for p in points] == [3, 7, 10, 13]
    main = [state for state in saved if len(state["records"]) < len(points)]
    # states before and after each branch, and every checkpoint_every steps in between
    assert {p.branch_from for p in points} <= {state["step"] for state in main}
    assert len(main) > len(points)

    plain = trainer(params_file, "k", tokenized[VOCAB], tmp_path / "plain", schedule="constant")
    plain.prepare()
    for state in main:
        while plain.state.step < state["step"]:
            plain.train_step(stop_requested=False)
        assert_same_training_state(state, plain.checkpointer.training_state())
    while plain.state.step < wsd.plan.main_steps:
        plain.train_step(stop_requested=False)
    assert wsd.state.history == plain.state.history  # every step's rate, loss, gradient norm
    assert [r["step"] for r in wsd.state.records] == [20, 40, 60, 80]


def test_a_run_stopped_in_a_cooldown_branch_resumes_to_the_same_numbers(
    tmp_path, params_file, tokenized, monkeypatch, caplog, one_thread
):
    params = load(params_file)
    spec = model_specs(params)["k"]
    config = TrainConfig.from_params({**params["train"], "threads": 0})
    train_run(spec, tokenized[VOCAB], config, tmp_path / "reference", tmp_path / "ref-state")
    third = eval_points(STEPS, 4, "wsd", config.cooldown_fraction)[2]
    cooldown_rate = loop_module.cooldown_rate

    def sigterm_half_way(start: float, step: int, steps: int, shape: str) -> float:
        if steps == third.cooldown_steps and step == steps // 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return cooldown_rate(start, step, steps, shape)

    monkeypatch.setattr(loop_module, "cooldown_rate", sigterm_half_way)
    with pytest.raises(Preempted, match="cooldown branch of evaluation point 3"):
        train_run(spec, tokenized[VOCAB], config, tmp_path / "run", tmp_path / "state")
    assert torch.load(tmp_path / "state" / "branch.pt", weights_only=True)["step"] == 6
    assert not (tmp_path / "run").exists()

    monkeypatch.undo()
    caplog.set_level(logging.INFO, logger="vocabscale")
    train_run(spec, tokenized[VOCAB], config, tmp_path / "run", tmp_path / "state")
    assert "resuming the cooldown of evaluation point 3 at step 6 of 10" in caplog.text
    assert_same_run(tmp_path / "run", tmp_path / "reference")
    assert not (tmp_path / "state" / "branch.pt").exists()


def swap_two_documents(corpus_dir: Path, out: Path) -> Path:
    """A copy of the corpus whose first two training documents trade places: the same tokens
    in another order."""
    shutil.copytree(corpus_dir, out)
    shard = train_shards(out)[0]
    texts = pq.read_table(shard).column("text").to_pylist()
    assert texts[0] != texts[1]
    texts[0], texts[1] = texts[1], texts[0]
    pq.write_table(pa.table({"text": pa.array(texts, pa.large_string())}), shard)
    return out


def test_changed_token_content_of_the_same_length_trains_afresh(
    tmp_path, params_file, corpus_dir, tokenized, caplog
):
    tokenizer = tokenized[VOCAB].parent / f"v{VOCAB}" / "tokenizer.json"
    changed = tmp_path / "tokens"
    swapped = swap_two_documents(corpus_dir, tmp_path / "corpus")
    tokenize_corpus(swapped, tokenizer, changed, tokenizer_settings())
    before, after = read_json(tokenized[VOCAB] / "stats.json"), read_json(changed / "stats.json")
    assert after["splits"]["train"]["tokens"] == before["splits"]["train"]["tokens"]
    assert after["splits"]["train"]["sha256"] != before["splits"]["train"]["sha256"]

    params = load(params_file)
    spec = model_specs(params)["one"]
    config = TrainConfig.from_params({**params["train"], "threads": 0})
    state = tmp_path / "state"
    caplog.set_level(logging.INFO, logger="vocabscale")
    train_run(spec, tokenized[VOCAB], config, tmp_path / "a", state)
    train_run(spec, tokenized[VOCAB], config, tmp_path / "again", state)
    assert "resuming" in caplog.text  # the same data: resumed
    caplog.clear()
    train_run(spec, changed, config, tmp_path / "b", state)
    assert "belongs to other settings or data; not resumed" in caplog.text
    assert "resuming" not in caplog.text
    trained = [pd.read_csv(tmp_path / run / "evals.csv")["eval_ce_sum"] for run in ("a", "b")]
    assert not trained[0].equals(trained[1])


def test_a_run_longer_than_the_corpus_reads_a_second_epoch_and_says_so(
    tmp_path, params_file, tokenized, caplog
):
    params = load(params_file)
    corpus = read_json(tokenized[VOCAB] / "stats.json")["splits"]["train"]["tokens"]
    steps = int(1.6 * corpus) // 2048
    spec = dataclasses.replace(model_specs(params)["one"], train_tokens=steps * 2048)
    config = TrainConfig.from_params({**params["train"], "threads": 0, "evals": 3})
    run = train_run(spec, tokenized[VOCAB], config, tmp_path / "run", tmp_path / "state")
    windows = (corpus - 1) // config.context
    assert run["epochs"] == pytest.approx(steps * 64 / windows) and run["epochs"] > 1.5
    epochs = pd.read_csv(tmp_path / "run" / "evals.csv")["epochs"]
    assert epochs.iloc[0] < 1 < epochs.iloc[-1]
    assert f"but the corpus holds {corpus}: {run['epochs']:.2f} epochs" in caplog.text


def test_token_arrays_without_a_content_digest_are_refused(tmp_path, tokenized):
    old = tmp_path / "tokens"
    shutil.copytree(tokenized[VOCAB], old)
    stats = read_json(old / "stats.json")
    del stats["splits"]["train"]["sha256"]  # as an older tokenize stage wrote them
    (old / "stats.json").write_text(json.dumps(stats))
    with pytest.raises(ValueError, match=r"tokens/stats.json records no content digest"):
        RunData.load(old, 32)


def test_with_a_warmup_in_tokens_a_wsd_point_is_the_run_of_its_length(
    tmp_path, params_file, tokenized, one_thread
):
    params = load(params_file)
    config = TrainConfig.from_params({**params["train"], "threads": 0, "warmup_tokens": 6 * 2048})
    assert config.schedule == "wsd"
    spec = model_specs(params)["k"]  # 80 steps, points at 20, 40, 60, 80
    train_run(spec, tokenized[VOCAB], config, tmp_path / "long", tmp_path / "long-state")
    half = dataclasses.replace(spec, train_tokens=40 * 2048)
    train_run(
        spec=half,
        tokens_dir=tokenized[VOCAB],
        config=config,
        out_dir=tmp_path / "half",
        checkpoint_dir=tmp_path / "half-state",
    )
    long = pd.read_csv(tmp_path / "long" / "evals.csv").set_index("step")
    short = pd.read_csv(tmp_path / "half" / "evals.csv").set_index("step")
    # the same warmup, main-trajectory rates, batches and cooldown: the same model, to the bit
    assert long.loc[40, "eval_ce_sum"] == short.loc[40, "eval_ce_sum"]
    assert long.loc[20, "eval_ce_sum"] == short.loc[20, "eval_ce_sum"]
