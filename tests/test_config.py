"""params.yaml validation: every mistake is named by its key, before any compute."""

import copy
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vocabscale.config import (
    ParamsError,
    _resolve,
    defaults,
    describe,
    load_params,
    schema,
    validate_params,
)
from vocabscale.sweep import run_grid

REPO = Path(__file__).resolve().parents[1]


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
    d_model = params["models"]["xs"]["d_model"]
    params["models"]["xs"]["n_head"] = next(h for h in range(3, d_model) if d_model % h)
    check(params, "models.xs", "not divisible by n_head")


def test_preset_and_explicit_shape_conflict(default_params):
    params = copy.deepcopy(default_params)
    params["models"]["big"] = {"preset": "33M", "d_model": 512, "train_tokens": 1e9}
    check(params, "models.big", "either 'preset'")


def test_budget_too_small_for_the_evaluations(default_params):
    params = copy.deepcopy(default_params)
    train = params["train"]  # a step fewer than the evaluation points
    params["models"]["xs"]["train_tokens"] = train["batch_tokens"] * (train["evals"] - 1)
    check(params, "models.xs.train_tokens", "train.evals")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (("tokenizer", "vocab_sizes"), [320.0]),  # would name a run xs-v320.0
        (("models", "xs", "n_layer"), 2.0),  # would fail only after the corpus is built
        (("corpus", "validation_characters"), 2e6),  # YAML reads 2e6 as a float
    ],
)
def test_an_integer_field_refuses_a_float(default_params, key, value):
    params = copy.deepcopy(default_params)
    *parents, last = key
    node = params
    for part in parents:
        node = node[part]
    node[last] = value
    where = ".".join(key) + ("[0]" if isinstance(value, list) else "")
    shown = repr(value[0] if isinstance(value, list) else value)
    check(params, f"{where}: {shown} is not an integer")


def test_a_model_name_with_a_line_break_is_refused(default_params):
    """It would pass a `$` pattern and split the model's command in dvc.yaml in two."""
    params = copy.deepcopy(default_params)
    params["models"]["xs\n"] = params["models"].pop("xs")
    check(params, "models: the name 'xs\\n' may hold only letters, digits")


def test_a_vocabulary_size_beyond_any_real_one_is_refused(default_params):
    params = copy.deepcopy(default_params)
    params["tokenizer"]["vocab_sizes"] = [640, 40960000]
    check(params, "tokenizer.vocab_sizes[1]: vocabulary size 40,960,000 is beyond the largest")


def test_a_key_written_twice_is_an_error_naming_both_lines(tmp_path):
    """PyYAML alone keeps the last one silently."""
    path = tmp_path / "params.yaml"
    lines = (REPO / "params.yaml").read_text().splitlines()
    first = next(number for number, line in enumerate(lines, 1) if line.startswith("  lr: "))
    lines.insert(first, "  lr: 3.0e-2")
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ParamsError, match=rf"(?s)the key 'lr' appears twice in one mapping \(first "
                       rf"on line {first}\).*line {first + 1}"):  # fmt: skip
        load_params(path)


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


def optional_leaves(node: dict, path: str = ""):
    """(dotted key, schema node) of every optional key that is not a section of its own, in
    sections, in the entries of maps (`models.<name>`) and of lists (`report.targets[]`). Keys
    that are alternatives of a `oneOf` (a model's preset or its explicit shape) have none."""
    node = _resolve(node)
    required = set(node.get("required", []))
    alternatives = {key for option in node.get("oneOf", []) for key in option.get("required", [])}
    for key, child in node.get("properties", {}).items():
        child = _resolve(child)
        where = f"{path}.{key}" if path else key
        if "properties" in child or isinstance(child.get("additionalProperties"), dict):
            yield from optional_leaves(child, where)
        elif isinstance(child.get("items"), dict) and "properties" in _resolve(child["items"]):
            yield from optional_leaves(child["items"], f"{where}[]")
        elif key not in required | alternatives:
            yield where, child
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        yield from optional_leaves(extra, f"{path}.<name>")


def test_every_optional_key_has_its_default_in_the_schema():
    """The schema is the one home of every default: each optional key declares one, and a
    params file that leaves a key out gets exactly that value."""
    missing = [where for where, node in optional_leaves(schema()) if "default" not in node]
    assert not missing, f"optional keys without a default in the schema: {missing}"


def test_left_out_keys_get_the_schema_defaults(default_params):
    params = copy.deepcopy(default_params)
    del params["train"]["beta2"], params["estimate"]["bootstrap"]
    params["models"]["xs"].pop("gpus", None)
    filled = validate_params(params)
    assert filled["train"]["beta2"] == defaults("train.beta2") == 0.95
    assert filled["estimate"]["bootstrap"] == defaults("estimate.bootstrap")
    assert filled["models"]["xs"]["gpus"] == 1  # defaults reach the entries of a map too
    assert filled["cluster"] == defaults("cluster")  # an absent section is filled whole


def test_help_text_is_the_schema_description_and_default():
    text = describe("estimate.parametric.min_flops")
    assert "C >= this" in text and "2.18e+17" in text


def numeric_keys(value, node: dict, path: str = ""):
    """The dotted key of every number in `value` (params with defaults filled in) that the
    schema `node` takes, and of every null where it could be one."""
    node = _resolve(node)
    if isinstance(value, dict):
        for key, child in value.items():
            child_node = node.get("properties", {}).get(key, node.get("additionalProperties"))
            if isinstance(child_node, dict):
                yield from numeric_keys(child, child_node, f"{path}.{key}" if path else key)
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for index, item in enumerate(value):
            yield from numeric_keys(item, node["items"], f"{path}[{index}]")
    elif {"number", "integer"} & set(
        node.get("type") if isinstance(node.get("type"), list) else [node.get("type")]
    ):
        yield path


def set_key(params: dict, where: str, value) -> None:
    parts = [int(p) if p.isdigit() else p for p in re.split(r"\.|\[|\]\.?", where) if p]
    node = params
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value


def test_every_number_must_be_finite(default_params):
    """.inf passed every `minimum`: train_tokens and runtime_safety overflowed later, lr: .inf
    marked every run diverged. No key means "unbounded" by infinity (null does that)."""
    filled = validate_params(copy.deepcopy(default_params))
    keys = list(numeric_keys(filled, schema()))
    assert {"train.lr", "models.xs.train_tokens", "cluster.runtime_safety"} <= set(keys)
    assert "report.targets[0].nnv" in keys and "corpus.max_characters" in keys  # null by default
    for where in keys:
        for value in (math.inf, -math.inf, math.nan):
            params = copy.deepcopy(filled)
            set_key(params, where, value)
            check(params, f"{where}: must be a finite number, not {value}")


@pytest.mark.parametrize(
    ("key", "shown"), [("[lr, beta1]", "list ['lr', 'beta1']"), ("1", "int 1"), ("on", "bool True")]
)
def test_a_key_that_is_not_a_string_is_an_error_naming_the_line(tmp_path, key, shown):
    """A list as a key ended in a TypeError; `on:` (YAML 1.1's true) was an unknown key True."""
    lines = (REPO / "params.yaml").read_text().splitlines()
    at = next(number for number, line in enumerate(lines, 1) if line.startswith("  lr: "))
    lines.insert(at, f"  {key}: 1.0")
    path = tmp_path / "params.yaml"
    path.write_text("\n".join(lines) + "\n")
    said = rf"(?s)^{re.escape(str(path))}: not valid YAML: .*a key must be a string, not "
    with pytest.raises(ParamsError, match=rf"{said}{re.escape(shown)}.*line {at + 1}, column 3"):
        load_params(path)


def test_include_path_says_it_makes_the_params_file_as_trusted_as_code():
    """lm-evaluation-harness imports the Python a task YAML names (`!function`)."""
    assert "`!function`" in describe("downstream.include_path")
    assert "as trusted as code" in describe("downstream.include_path")
    readme = (REPO / "README.md").read_text()
    downstream = readme[readme.index("### Evaluate every run downstream") :]
    assert "as trusted as code" in downstream[: downstream.index("\n### ")]
