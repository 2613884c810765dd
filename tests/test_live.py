"""Live training curves: DVCLive gets every optimizer step's loss, learning rate and tokens/s,
writes nothing but its own folder, continues a resumed run without duplicate steps, and the
run's outputs are byte-identical with or without it."""

from __future__ import annotations

import hashlib
import sys

import pandas as pd
import pytest

from vocabscale.accounting import ModelShape
from vocabscale.config import defaults
from vocabscale.io import read_json
from vocabscale.sweep import ModelSpec
from vocabscale.train.config import TrainConfig
from vocabscale.train.live import live_curves, log_step, open_backend
from vocabscale.train.loop import train_run

STEPS = 24


def train(tokens_dir, root, live_settings):
    train = defaults("train") | {"seed": 0, "context": 32, "batch_tokens": 1024}
    train |= {"micro_batch_size": 32, "lr": 1e-2, "evals": 2, "device": "cpu", "threads": 1}
    train["schedule"] = "constant"  # every step on the main trajectory, the one the curves show
    spec = ModelSpec(
        "t", ModelShape(n_layer=1, n_head=2, d_model=32, ffn=64), STEPS * 1024, 1, 1, "auto"
    )
    with live_curves(live_settings, "t-v640", {"model": "t", **train}):
        train_run(spec, tokens_dir, TrainConfig.from_params(train), root / "run", root / "ckpt")
    return root / "run"


def digests(run_dir):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in run_dir.iterdir()}


def curve(directory, name):
    return pd.read_csv(directory / f"plots/metrics/train/{name}.tsv", sep="\t")


def test_dvclive_logs_every_step_and_changes_no_output(tokenized, tmp_path):
    live_dir = tmp_path / "live"
    logged = train(tokenized[640], tmp_path / "a", {"logger": "dvclive", "dir": str(live_dir)})
    plain = train(tokenized[640], tmp_path / "b", defaults("live"))
    assert digests(logged) == digests(plain)

    run = live_dir / "t-v640"
    loss = curve(run, "loss")
    assert loss["step"].tolist() == list(range(1, STEPS + 1))
    history = pd.read_csv(plain / "history.csv").set_index("step")
    assert loss.set_index("step").loc[STEPS, "loss"] == pytest.approx(
        history.loc[STEPS, "train_loss"]
    )
    assert curve(run, "lr")["lr"].iloc[0] == pytest.approx(history["lr"].iloc[0])
    assert (curve(run, "tokens_per_second")["tokens_per_second"] > 0).all()
    assert read_json(run / "metrics.json")["step"] == STEPS
    assert not (run / "dvc.yaml").exists() and not (tmp_path / "dvc.yaml").exists()


def test_a_resumed_run_continues_its_curves_without_duplicate_steps(tmp_path):
    settings = {"logger": "dvclive", "dir": str(tmp_path)}
    with live_curves(settings, "r", {}):
        for step in range(1, 11):
            log_step(step, 1000 * step, loss=10.0 - step, lr=1e-3)
    with live_curves(settings, "r", {}):  # resumed from the checkpoint at step 6
        for step in range(7, 13):
            log_step(step, 1000 * step, loss=100.0 + step, lr=1e-3)
    loss = curve(tmp_path / "r", "loss")
    assert loss["step"].tolist() == list(range(1, 13))
    assert loss["loss"].tolist()[5:7] == [4.0, 107.0]
    with live_curves(settings, "r", {}):  # trained afresh
        log_step(1, 1000, loss=1.0, lr=1e-3)
    assert curve(tmp_path / "r", "loss")["step"].tolist() == [1]


def test_a_logger_that_is_not_installed_is_named_before_training(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if it were not installed
    settings = {"logger": "wandb", "project": "vocabscale"}
    with pytest.raises(ValueError, match=r"live\.logger: wandb is not installed"):
        open_backend(settings, "r", {})
