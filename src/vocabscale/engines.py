"""What each stage depends on besides its inputs (its code and settings), read from dvc.yaml,
the one list of both engines: DVC reads it there, and the Snakefile through this module, so
that a change reruns the same stages under both (docs/design.md, "Stages and artifacts")."""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vocabscale.config import read_yaml

#: The params file DVC reads keys from when a stage names no file; Snakemake reads them from
#: the params file its rules pass to the stages (params.yaml, or the last --configfile).
DEFAULT_PARAMS = "params.yaml"


@functools.cache
def _read(path: Path, mtime_ns: int) -> Any:
    """A YAML file, read once per version (every job of a rule reads the same files)."""
    return read_yaml(path)


def _value_at(data: Any, key: str) -> Any:
    """The value under a dotted key, as DVC reads it; None where it is absent (DVC then refuses
    to run the stage; Snakemake fills in the default)."""
    for part in key.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


@dataclass(frozen=True)
class DeclaredStages:
    """dvc.yaml's stages, read for the Snakefile."""

    root: Path
    stages: dict[str, Any]

    def code(self, stage: str) -> list[str]:
        """The source files the stage runs, as paths relative to the repository root."""
        return [dep for dep in self.stages[stage].get("deps", []) if dep.startswith("src/")]

    def settings(self, stage: str, params_file: str | Path, item: Any = None) -> dict[str, Any]:
        """The values of the settings the stage declares, `{"file:key": value}`, read as DVC
        reads them (params.yaml as written, without defaults; the schema's sections), with
        `${item.x}` filled in from `item` (a job's wildcards, or a dict). Keys sorted, so that
        Snakemake compares values, not the order of a file."""
        item = dict(item.items()) if item else {}
        found = {}
        for entry in self.stages[stage].get("params", []):
            declared = {DEFAULT_PARAMS: [entry]} if isinstance(entry, str) else entry
            for file, keys in declared.items():
                path = Path(params_file if file == DEFAULT_PARAMS else self.root / file)
                data = _read(path, path.stat().st_mtime_ns)
                for key in keys:
                    key = re.sub(r"\$\{item\.(\w+)\}", lambda m: str(item[m[1]]), key)
                    found[f"{file}:{key}"] = _value_at(data, key)
        return json.loads(json.dumps(found, sort_keys=True))


def declared_stages(root: str | Path = ".") -> DeclaredStages:
    root = Path(root)
    return DeclaredStages(root, read_yaml(root / "dvc.yaml")["stages"])
