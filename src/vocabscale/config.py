"""params.yaml: loading, schema validation with errors that name the key, defaults, run ids.

Every stage calls `load_params` first, so a misspelt key or an impossible value stops the
pipeline before any compute is spent. Defaults live here, in one place; the schema says what
is allowed.
"""

from __future__ import annotations

import copy
import difflib
import functools
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from vocabscale.accounting import MIN_VOCAB_SIZE, PAPER_SHAPES, ModelShape

#: The token that separates documents; it is entry 0 of every tokenizer.
END_OF_TEXT = "<|endoftext|>"

DEFAULTS: dict[str, Any] = {
    "corpus": {
        "hub_config": None,
        "split": "train",
        "text_field": "text",
        "validation_fraction": 0.01,
        "validation_characters": 2_000_000,
        "tokenizer_sample_characters": 200_000_000,
        "max_characters": None,
        "shard_characters": 100_000_000,
    },
    "tokenizer": {
        "min_frequency": 2,
        "batch_documents": 1000,
        "batch_characters": 4_000_000,
        "checkpoint_seconds": 60.0,
    },
    "train": {
        "min_lr_ratio": 0.1,
        "warmup_fraction": 0.1,
        "weight_decay": 0.1,
        "beta1": 0.9,
        "beta2": 0.95,
        "grad_clip": 1.0,
        "eval_batch_size": 16,
        "head_chunk_tokens": 8192,
        # 128 Mi logits per chunk: 4096 tokens at V = 32,768, 524 at V = 256,000
        "head_chunk_logits": 2**27,
        "device": "auto",
        "precision": "auto",
        "compile": False,
        "threads": 0,
        "checkpoint_every": 0,
    },
    "normalize": {"unigram_pseudocount": 1.0},
    "estimate": {
        "tokenization": "pipeline",
        "isoflops": {
            "densify": True,
            "free_exponents": False,
            "huber_delta": 1e-3,
            "nnv_points": 50,
            "vocab_points": 20,
        },
        "derivative": {
            "anchor_flops": None,
            "anchor_vocab_size": None,
            "anchor_nnv": None,
            "anchor_d_model": None,
            "nnv_grid": None,
            "grid_widths": "runs",
            "exponent_through_anchor": True,
            "huber_delta": 1e-3,
        },
        "parametric": {"min_flops": 2.18e17, "huber_delta": 1e-3, "authors_tokenization": False},
        "bootstrap": {"samples": 100, "seed": 0, "confidence": 0.9},
    },
    "report": {
        "round_to": 128,
        "public_models": [],  # empty: the table built into vocabscale.report
        "extrapolation_warn": 10.0,
        "disagreement_warn": 1.5,
        "budget_range": [0.1, 10.0],
    },
    "cluster": {
        "partition": None,
        "account": None,
        "qos": None,
        "gpu_type": None,
        "cpu_partition": None,
        "gpu_peak_flops": 989e12,
        "expected_mfu": 0.4,
        "runtime_safety": 1.5,
        "runtime_overhead_minutes": 10,
        "max_runtime_minutes": 2880,
        "cpus_per_gpu": 8,
        "mem_mb_per_gpu": 64000,
        "cpu_job_runtime_minutes": 240,
    },
}


class ParamsError(ValueError):
    """params.yaml is malformed; the message names the file and the key."""


@dataclass(frozen=True)
class ModelSpec:
    """One model of the grid, resolved from a preset or an explicit shape."""

    name: str
    shape: ModelShape
    train_tokens: int
    gpus: int = 1


@functools.cache
def schema() -> dict[str, Any]:
    text = resources.files("vocabscale").joinpath("schemas/params.schema.yaml").read_text()
    return yaml.safe_load(text)


def _key_path(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _allowed_keys(node_schema: dict[str, Any]) -> list[str]:
    return list(node_schema.get("properties", {}))


def _describe(error: jsonschema.ValidationError) -> str:
    """One line naming the key and saying what is wrong with it, with a spelling hint."""
    where = _key_path(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = _allowed_keys(error.schema)
        unknown = [key for key in error.instance if key not in allowed]
        lines = []
        for key in unknown:
            full = f"{where}.{key}" if error.absolute_path else str(key)
            hint = difflib.get_close_matches(str(key), allowed, n=1)
            suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
            lines.append(f"unknown key '{full}'{suggestion}; allowed here: {', '.join(allowed)}")
        return "; ".join(lines)
    if error.validator == "required":
        return f"{where}: {error.message}"
    if error.validator == "oneOf" and where.startswith("models."):
        return (
            f"{where}: give either 'preset' (one of {', '.join(PAPER_SHAPES)}) or all of "
            "n_layer, n_head, d_model, ffn, not both"
        )
    if where.startswith("tokenizer.vocab_sizes[") and error.validator == "minimum":
        return (
            f"{where}: vocabulary size {error.instance} is impossible for a byte-level BPE, "
            f"which needs at least {MIN_VOCAB_SIZE} entries (256 bytes + end-of-text)"
        )
    return f"{where}: {error.message}"


def _merge_defaults(params: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(params)
    for key, value in defaults.items():
        if isinstance(value, dict):
            merged[key] = _merge_defaults(merged.get(key) or {}, value)
        else:
            merged.setdefault(key, copy.deepcopy(value))
    return merged


def resolve_model(name: str, entry: dict[str, Any]) -> ModelSpec:
    if "preset" in entry:
        shape = PAPER_SHAPES[entry["preset"]][0]
    else:
        shape = ModelShape(entry["n_layer"], entry["n_head"], entry["d_model"], entry["ffn"])
    return ModelSpec(name, shape, int(entry["train_tokens"]), int(entry.get("gpus", 1)))


def _semantic_errors(params: dict[str, Any]) -> list[str]:
    """Checks a JSON schema cannot express: shapes that cannot be built, batches that do not
    divide, budgets that cannot hold the requested evaluations."""
    errors = []
    train = params["train"]
    if train["batch_tokens"] % train["context"]:
        errors.append(
            f"train.batch_tokens: {train['batch_tokens']} is not a multiple of "
            f"train.context ({train['context']})"
        )
    for name, entry in params["models"].items():
        spec = resolve_model(name, entry)
        shape = spec.shape
        if shape.d_model % shape.n_head:
            errors.append(
                f"models.{name}: d_model {shape.d_model} is not divisible by n_head {shape.n_head}"
            )
        elif (shape.d_model // shape.n_head) % 2:
            errors.append(
                f"models.{name}: head width d_model/n_head = {shape.d_model // shape.n_head} "
                "must be even for rotary embeddings"
            )
        sequences = train["batch_tokens"] // train["context"]
        if sequences % spec.gpus:
            errors.append(
                f"models.{name}.gpus: {spec.gpus} processes cannot share the {sequences} "
                f"sequences of a step (train.batch_tokens / train.context) evenly"
            )
        steps = spec.train_tokens // train["batch_tokens"]
        if steps < train["evals"]:
            errors.append(
                f"models.{name}.train_tokens: {spec.train_tokens} tokens make {steps} steps of "
                f"train.batch_tokens={train['batch_tokens']}, fewer than train.evals="
                f"{train['evals']} evaluations"
            )
    names = [target["name"] for target in params["report"]["targets"]]
    for duplicate in sorted({n for n in names if names.count(n) > 1}):
        errors.append(f"report.targets: the name '{duplicate}' appears more than once")
    return errors


def validate_params(params: Any, source: str = "params.yaml") -> dict[str, Any]:
    """Validate raw params and return them with defaults filled in; raise ParamsError naming
    every offending key."""
    if not isinstance(params, dict):
        raise ParamsError(f"{source}: expected a mapping at the top level")
    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(params), key=lambda e: list(e.absolute_path))
    if errors:
        lines = "\n".join(f"  - {_describe(error)}" for error in errors)
        raise ParamsError(f"{source} is invalid:\n{lines}")
    merged = _merge_defaults(params, DEFAULTS)
    semantic = _semantic_errors(merged)
    if semantic:
        raise ParamsError(f"{source} is invalid:\n" + "\n".join(f"  - {e}" for e in semantic))
    return merged


class _Loader(yaml.SafeLoader):
    """PyYAML follows YAML 1.1, which reads `1e9` or `8.5e7` as strings; read them as floats
    the way YAML 1.2 (and every user) does."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def read_yaml(path: str | Path) -> Any:
    with open(path) as stream:
        return yaml.load(stream, Loader=_Loader)


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    path = Path(path)
    try:
        raw = read_yaml(path)
    except FileNotFoundError:
        raise ParamsError(f"{path}: no such file") from None
    except yaml.YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML: {error}") from None
    return validate_params(raw, str(path))


def model_specs(params: dict[str, Any]) -> dict[str, ModelSpec]:
    return {name: resolve_model(name, entry) for name, entry in params["models"].items()}


def run_id(model: str, vocab_size: int) -> str:
    """The name of one training run, used in every path: `<model>-v<V>`."""
    return f"{model}-v{vocab_size}"


def run_grid(params: dict[str, Any]) -> list[str]:
    """Every run of the sweep: each model with each vocabulary size."""
    return [
        run_id(model, v) for model in params["models"] for v in params["tokenizer"]["vocab_sizes"]
    ]
