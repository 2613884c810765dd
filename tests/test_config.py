"""params.yaml validation: every mistake is named by its key, before any compute."""

import copy
import subprocess
import sys

import pytest
import yaml

from vocabscale.config import ParamsError, load_params, run_grid, validate_params


def check(params: dict, *fragments: str) -> None:
    with pytest.raises(ParamsError) as error:
        validate_params(params, "params.yaml")
    message = str(error.value)
    for fragment in fragments:
        assert fragment in message, message


def test_shipped_params_are_valid(default_params):
    params = validate_params(copy.deepcopy(default_params))
    assert len(run_grid(params)) == len(params["models"]) * len(params["tokenizer"]["vocab_sizes"])


def test_misspelt_key_is_named_with_a_suggestion(default_params):
    params = copy.deepcopy(default_params)
    params["tokenizer"]["vocab_sizs"] = params["tokenizer"].pop("vocab_sizes")
    check(params, "tokenizer.vocab_sizs", "did you mean 'vocab_sizes'")


def test_wrong_type_names_the_key(default_params):
    params = copy.deepcopy(default_params)
    params["train"]["lr"] = "fast"
    check(params, "train.lr", "'fast'")


def test_impossible_vocabulary_size_names_the_entry(default_params):
    params = copy.deepcopy(default_params)
    params["tokenizer"]["vocab_sizes"] = [512, 200]
    check(params, "tokenizer.vocab_sizes[1]", "byte-level BPE")


def test_unbuildable_shape_names_the_model(default_params):
    params = copy.deepcopy(default_params)
    params["models"]["xs"]["n_head"] = 5
    check(params, "models.xs", "not divisible by n_head")


def test_preset_and_explicit_shape_conflict(default_params):
    params = copy.deepcopy(default_params)
    params["models"]["big"] = {"preset": "33M", "d_model": 512, "train_tokens": 1e9}
    check(params, "models.big", "either 'preset'")


def test_budget_too_small_for_the_evaluations(default_params):
    params = copy.deepcopy(default_params)
    params["models"]["xs"]["train_tokens"] = 4096
    check(params, "models.xs.train_tokens", "train.evals")


def test_scientific_notation_reads_as_numbers(tmp_path, default_params):
    params = copy.deepcopy(default_params)
    params["report"]["targets"] = []
    text = yaml.safe_dump(params).replace("targets: []", "targets:\n  - {name: big, nnv: 8.5e7}")
    path = tmp_path / "params.yaml"
    path.write_text(text)
    assert load_params(path)["report"]["targets"][0]["nnv"] == 8.5e7  # PyYAML alone: a string


def test_the_cli_stops_before_compute_with_the_key_named(tmp_path, default_params):
    params = copy.deepcopy(default_params)
    params["train"]["contxt"] = 64
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "vocabscale",
            "prepare-corpus",
            "--params",
            str(path),
            "--out",
            str(tmp_path / "corpus"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "train.contxt" in result.stderr and "did you mean 'context'" in result.stderr
    assert not (tmp_path / "corpus").exists()
