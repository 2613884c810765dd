"""params.yaml: loading, schema validation with errors that name the key, defaults.

Every stage calls `load_params` first, so a misspelt key or an impossible value stops the
pipeline before any compute is spent. The schema (`schemas/params.schema.yaml`) says what is
allowed and holds every default (`default:` entries); `defaults()` reads them from there, so
the pipeline, `vocabscale estimate` and the report all fill in the same values.
"""

from __future__ import annotations

import copy
import difflib
import functools
import math
import re
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from vocabscale.accounting import MIN_VOCAB_SIZE, PAPER_SHAPES
from vocabscale.sweep import ModelSpec, parallelism, resolve_model, run_id

#: The largest vocabulary the schema allows: four times the largest in public models (256K), and
#: beyond what the paper predicts for 300B parameters (about 390K); a typo (an extra zero)
#: beyond it is caught before a tokenizer is trained.
MAX_VOCAB_SIZE = 2**20


class ParamsError(ValueError):
    """params.yaml is malformed; the message names the file and the key."""


@functools.cache
def schema() -> dict[str, Any]:
    text = resources.files("vocabscale").joinpath("schemas/params.schema.yaml").read_text()
    return yaml.load(text, Loader=_Loader)


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    """A schema node with its `$ref` (to `#/$defs/...`) merged in."""
    if "$ref" not in node:
        return node
    target = schema()
    for part in node["$ref"].removeprefix("#/").split("/"):
        target = target[part]
    return {**_resolve(target), **{k: v for k, v in node.items() if k != "$ref"}}


def _fill_defaults(value: Any, node: dict[str, Any]) -> Any:
    """`value` with the schema's defaults filled in wherever a key is absent, recursively
    (into the entries of maps such as `models` and of lists such as `report.targets` too)."""
    node = _resolve(node)
    if isinstance(value, list) and isinstance(node.get("items"), dict):
        return [_fill_defaults(item, node["items"]) for item in value]
    if not isinstance(value, dict):
        return value
    filled = dict(value)
    properties = node.get("properties", {})
    for key, child in properties.items():
        child = _resolve(child)
        if key in filled:
            filled[key] = _fill_defaults(filled[key], child)
        elif "default" in child:
            filled[key] = copy.deepcopy(child["default"])
        elif "properties" in child and key not in node.get("required", []):
            filled[key] = _fill_defaults({}, child)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        for key in set(filled) - set(properties):
            filled[key] = _fill_defaults(filled[key], extra)
    return filled


@functools.cache
def _defaults() -> dict[str, Any]:
    return _fill_defaults({key: {} for key in schema()["properties"]}, schema())


def defaults(path: str = "") -> Any:
    """The defaults of the schema under a dotted key path (`estimate.bootstrap.confidence`),
    a fresh copy; `""` for all of them."""
    value: Any = _defaults()
    for part in filter(None, path.split(".")):
        value = value[part]
    return copy.deepcopy(value)


def describe(path: str) -> str:
    """The schema's description of a dotted key path, with its default: help text for options
    that set the same value on the command line."""
    node = schema()
    for part in path.split("."):
        node = _resolve(node)["properties"][part]
    node = _resolve(node)
    text = node.get("description", "")
    if "default" in node:
        text += f" (default: {node['default']})" if text else f"default: {node['default']}"
    return text


def _key_path(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _describe_error(error: jsonschema.ValidationError) -> str:
    """One line naming the key and saying what is wrong with it, with a spelling hint."""
    where = _key_path(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = list(error.schema.get("properties", {}))
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
    if where.startswith("tokenizer.vocab_sizes[") and error.validator == "maximum":
        return (
            f"{where}: vocabulary size {error.instance:,} is beyond the largest vocabscale "
            f"takes, {MAX_VOCAB_SIZE:,} (public models use at most about 256K)"
        )
    if error.validator == "type" and _is_non_finite(error.instance):
        return f"{where}: must be a finite number, not {error.instance}"
    if (
        error.validator == "type"
        and isinstance(error.instance, float)
        and "integer" in str(error.validator_value)
    ):
        return f"{where}: {error.instance!r} is not an integer (YAML reads 2e6 or 64.0 as floats)"
    if error.validator == "pattern" and where == "models":
        return (
            f"models: the name {error.instance!r} may hold only letters, digits, '_' and '.', "
            "and starts with a letter or a digit (it names runs, paths and commands)"
        )
    if error.validator == "pattern" and where.startswith("cluster."):
        return f"{where}: {slurm_name_problem(error.instance)}"
    return f"{where}: {error.message}"


def _is_non_finite(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def slurm_name_problem(value: str) -> str:
    """What is wrong with a partition, account, QoS or GPU type name (SLURM's characters, no
    spaces or shell metacharacters: the executor writes it into an sbatch command line)."""
    return (
        f"{value!r} is not a SLURM name: letters, digits, '_', '-' and '.' only (a partition: "
        "a comma-separated list of them)"
    )


def check_slurm_name(key: str, value: str, where: str) -> None:
    """A ParamsError naming `where` (an environment variable) unless `value` is a name the
    schema takes for `cluster.<key>`."""
    pattern = _resolve(schema()["properties"]["cluster"]["properties"][key])["pattern"]
    if not re.search(pattern, value):
        raise ParamsError(f"{where}: {slurm_name_problem(value)}")


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
        if sequences % spec.processes:
            errors.append(
                f"models.{name}.gpus: {spec.processes} processes ({spec.nodes} node(s) x "
                f"{spec.gpus}) cannot share the {sequences} sequences of a step "
                "(train.batch_tokens / train.context) evenly"
            )
        errors.extend(_node_errors(name, spec, params))
        errors.extend(_memory_errors(spec, params))
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


def _node_errors(name: str, spec: ModelSpec, params: dict[str, Any]) -> list[str]:
    """A GPU run must fit on its nodes: no more GPUs per node than a node has."""
    per_node = params["cluster"]["gpus_per_node"]
    if params["train"]["device"] == "cpu" or spec.gpus <= per_node:
        return []
    nodes = -(-spec.gpus // per_node)
    return [
        f"models.{name}.gpus: the runs of {name} ({name}-v<V>) ask for {spec.gpus} GPUs on one "
        f"node, but cluster.gpus_per_node is {per_node}; spread them over nodes, e.g. "
        f"nodes: {nodes}, gpus: {-(-spec.gpus // nodes)}"
    ]


def _memory_errors(spec: ModelSpec, params: dict[str, Any]) -> list[str]:
    """A GPU run must fit its GPUs' memory (by the plan's estimate), with FSDP if need be."""
    errors = []
    for vocab_size in params["tokenizer"]["vocab_sizes"]:
        chosen = parallelism(spec, vocab_size, params)
        if chosen.gpu_bytes is None or chosen.memory_bytes <= chosen.gpu_bytes:
            continue
        how, remedy = {
            "none": ("on one GPU", f"give it GPUs to shard over (models.{spec.name}.gpus)"),
            "ddp": ("under DDP", f"set models.{spec.name}.parallel: fsdp (or auto)"),
            "fsdp": (f"under FSDP over {spec.processes} GPUs", "give it more GPUs or nodes"),
        }[chosen.kind]
        errors.append(
            f"run {run_id(spec.name, vocab_size)}: needs about {chosen.memory_bytes / 1e9:.1f} "
            f"GB per GPU {how} (the plan's estimate), more than cluster.gpu_memory_gb "
            f"({chosen.gpu_bytes / 1e9:g}); {remedy}, or lower train.micro_batch_size"
        )
    return errors


def _is_integer(checker: Any, instance: Any) -> bool:
    """An integer is an int. JSON Schema also takes 64.0, which would name a run `xs-v64.0`
    or fail as a layer count after the corpus is built."""
    return isinstance(instance, int) and not isinstance(instance, bool)


def _is_number(checker: Any, instance: Any) -> bool:
    """A number is finite: YAML's .inf and .nan (and 1e999) would pass every `minimum`, then
    overflow a step count or mark every run diverged. No key means "unbounded" by infinity:
    those that can be unbounded say so with null."""
    is_number = isinstance(instance, (int, float)) and not isinstance(instance, bool)
    return is_number and math.isfinite(instance)


_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine_many(
        {"integer": _is_integer, "number": _is_number}
    ),
)


def validate_params(params: Any, source: str = "params.yaml") -> dict[str, Any]:
    """Validate raw params and return them with defaults filled in; raise ParamsError naming
    every offending key."""
    if not isinstance(params, dict):
        raise ParamsError(f"{source}: expected a mapping at the top level")
    validator = _Validator(schema())
    errors = sorted(validator.iter_errors(params), key=lambda e: list(e.absolute_path))
    if errors:
        lines = "\n".join(f"  - {_describe_error(error)}" for error in errors)
        raise ParamsError(f"{source} is invalid:\n{lines}")
    merged = _fill_defaults(copy.deepcopy(params), schema())
    semantic = _semantic_errors(merged)
    if semantic:
        raise ParamsError(f"{source} is invalid:\n" + "\n".join(f"  - {e}" for e in semantic))
    return merged


class _Loader(yaml.SafeLoader):
    """PyYAML follows YAML 1.1, which reads `1e9` or `8.5e7` as strings; read them as floats
    the way YAML 1.2 (and every user) does. A key written twice in one mapping is an error
    (PyYAML keeps the last silently), and so is a key that is not a string (a list would end in
    a TypeError, `1:` or `on:` would be an int or a bool no schema names): both with the line."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *defaults`: overriding merged keys is what merging is for
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"a key must be a string, not {type(key).__name__} {key!r} (quote it if "
                    "it is a name)",
                    key_node.start_mark,
                )
            if key in lines:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"the key {key!r} appears twice in one mapping (first on line {lines[key]})",
                    key_node.start_mark,
                )
            lines[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


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


def add_params_argument(parser) -> None:
    """`--params`: the validated params file a stage reads its settings from."""
    parser.add_argument("--params", default="params.yaml", help="validated params file")
