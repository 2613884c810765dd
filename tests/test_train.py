"""Training: safe to kill (SIGKILL resumes, SIGTERM checkpoints and exits non-zero), divergence
is recorded rather than hidden, and several processes train on the same data as one.

The kill tests run the real `vocabscale train` command in a subprocess and signal it while it
trains; every run uses one CPU thread so that runs in different processes agree to the bit.
"""

import copy
import itertools
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import write_params

import vocabscale
from vocabscale.accounting import ModelShape
from vocabscale.config import ParamsError, defaults, validate_params
from vocabscale.io import read_json, read_tokens
from vocabscale.sweep import model_specs
from vocabscale.train import checkpoint as checkpoint_module
from vocabscale.train.checkpoint import code_digest, fingerprint, read_state
from vocabscale.train.config import TrainConfig
from vocabscale.train.data import sample_batch
from vocabscale.train.evaluate import evaluate
from vocabscale.train.loop import accumulate_gradients, train_run
from vocabscale.train.model import Llama
from vocabscale.train.schedule import eval_steps, learning_rate
from vocabscale.train.stage import EXIT_PREEMPTED

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
        model, validation, 32, 16, torch.device("cpu"), torch.autocast("cpu", enabled=False), 8192
    )
    assert count == a["eval_tokens"].iloc[-1]
    assert f"{ce_sum:.10g}" == f"{a['eval_ce_sum'].iloc[-1]:.10g}"


def test_shards_of_a_batch_make_the_global_batch():
    tokens = np.arange(10_000, dtype=np.uint16)
    inputs, targets = sample_batch(tokens, seed=3, step=17, sequences=8, context=16)
    for world in (2, 4, 8):
        shards = [sample_batch(tokens, 3, 17, 8, 16, rank, world) for rank in range(world)]
        assert torch.equal(torch.cat([x for x, _ in shards]), inputs)
        assert torch.equal(torch.cat([y for _, y in shards]), targets)
    assert torch.equal(inputs[:, 1:], targets[:, :-1])
    other_step, _ = sample_batch(tokens, seed=3, step=18, sequences=8, context=16)
    assert not torch.equal(other_step, inputs)


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


def test_schedule_and_evaluation_points():
    settings = {**defaults("train"), "seed": 0, "context": 8, "batch_tokens": 8}
    config = TrainConfig.from_params({**settings, "micro_batch_size": 1, "lr": 1.0, "evals": 20})
    rates = [learning_rate(step, 1000, config) for step in range(1000)]
    assert rates[0] == pytest.approx(0.01) and rates[99] == pytest.approx(1.0)  # 10% warmup
    assert rates[-1] == pytest.approx(0.1, abs=1e-4)  # cosine down to min_lr_ratio
    assert all(a >= b for a, b in itertools.pairwise(rates[99:]))
    # the paper's 20 evaluations, evenly spaced in tokens, the last at the end
    assert eval_steps(1000, 20) == list(range(50, 1001, 50))


def test_checkpoints_are_kept_across_device_and_thread_changes_only(tiny_params_dict):
    params = validate_params(copy.deepcopy(tiny_params_dict))
    spec = model_specs(params)["a"]
    data = {"splits": {"train": {"tokens": 1000}}}
    config = TrainConfig.from_params(params["train"])

    def changed(**kwargs) -> str:
        return fingerprint(spec, 320, TrainConfig.from_params({**params["train"], **kwargs}), data)

    same = fingerprint(spec, 320, config, data)
    assert changed(threads=7) == changed(device="cuda") == changed(compile=True) == same
    assert changed(lr=1e-4) != same and changed(seed=1) != same
    assert fingerprint(spec, 640, config, data) != same


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
    data = {"splits": {"train": {"tokens": 1000}}}
    same = fingerprint(spec, 320, config, data)
    monkeypatch.setattr(checkpoint_module, "code_digest", lambda: code_digest(package))
    assert fingerprint(spec, 320, config, data) != same


def test_an_unreadable_checkpoint_means_starting_afresh(tmp_path):
    path = tmp_path / "state.pt"
    torch.save({"fingerprint": "x", "model": {"w": torch.zeros(1000)}}, path)
    assert read_state(path, mmap=False)["fingerprint"] == "x"
    path.write_bytes(path.read_bytes()[:500])  # cut short, as by a full disk
    assert read_state(path, mmap=False) is None


def test_gpus_must_share_the_batch_evenly(tiny_params_dict):
    params = copy.deepcopy(tiny_params_dict)
    params["models"]["a"]["gpus"] = 3  # 2048 / 32 = 64 sequences per step
    with pytest.raises(ParamsError, match=r"models\.a\.gpus"):
        validate_params(params)
