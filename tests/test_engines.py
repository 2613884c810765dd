"""The Snakefile and dvc.yaml describe one pipeline: for the default params, every Snakemake job
and every DVC stage pair up by their command, and each pair writes the same outputs from the
same inputs. A stage, an argument or an output that one engine gains and the other lacks fails
here."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
from conftest import REPO, git_project, run_in
from dvc.dependency.param import ParamsDependency
from dvc.repo import Repo

from vocabscale.cli import COMMANDS, command_entry
from vocabscale.config import read_yaml
from vocabscale.estimate.approaches import APPROACHES


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return git_project(tmp_path_factory.mktemp("engines"))


def one_line(command: str) -> str:
    return " ".join(command.split())


def snakemake_jobs(project: Path) -> list[dict]:
    """Every job of `snakemake --forceall --dry-run --printshellcmds`: its rule, command,
    inputs and outputs, read from what Snakemake prints."""
    result = run_in(
        project, "snakemake", "--forceall", "--dry-run", "--printshellcmds", timeout=300
    )
    jobs: list[dict] = []
    for line in result.stdout.splitlines():
        if match := re.fullmatch(r"(?:local)?rule (\w+):", line):
            jobs.append({"rule": match[1], "inputs": set(), "outputs": set(), "command": None})
        elif match := re.fullmatch(r"\s+(input|output): (.+)", line):
            jobs[-1][f"{match[1]}s"] = set(match[2].split(", "))
        elif line.startswith("Shell command: "):
            jobs[-1]["command"] = one_line(line.removeprefix("Shell command: "))
    jobs = [job for job in jobs if job["rule"] != "all"]
    assert jobs and all(job["command"] for job in jobs), result.stdout[-3000:]
    return jobs


def dvc_stages(project: Path) -> list[dict]:
    """Every stage of dvc.yaml, matrices expanded: name, command, data dependencies (not the
    params, not the code) and outputs."""
    with Repo(str(project)) as repo:
        return [
            {
                "name": stage.name,
                "command": one_line(stage.cmd),
                "inputs": {
                    str(dep.def_path)
                    for dep in stage.deps
                    if not isinstance(dep, ParamsDependency)
                    and not str(dep.def_path).startswith("src/")
                },
                "outputs": {str(out.def_path) for out in stage.outs},
            }
            for stage in repo.index.stages
        ]


def covers(dependency: str, path: str) -> bool:
    return path == dependency or path.startswith(dependency.rstrip("/") + "/")


def test_snakefile_and_dvc_yaml_agree(project):
    jobs, stages = snakemake_jobs(project), dvc_stages(project)
    by_command = {job["command"]: job for job in jobs}
    by_stage_command = {stage["command"]: stage for stage in stages}
    assert len(by_command) == len(jobs) and len(by_stage_command) == len(stages)
    only_snakemake = sorted(set(by_command) - set(by_stage_command))
    only_dvc = sorted(set(by_stage_command) - set(by_command))
    assert not only_snakemake and not only_dvc, (
        "commands of one engine only:\n  Snakefile: "
        + "\n  Snakefile: ".join(only_snakemake)
        + "\n  dvc.yaml: "
        + "\n  dvc.yaml: ".join(only_dvc)
    )
    for command, stage in by_stage_command.items():
        job = by_command[command]
        assert stage["name"].split("@")[0] == job["rule"], command
        assert stage["outputs"] == job["outputs"], command
        # DVC may name a directory where Snakemake lists the files in it, no more
        for path in job["inputs"]:
            assert any(covers(dep, path) for dep in stage["inputs"]), (command, path)
        for dep in stage["inputs"]:
            assert any(covers(dep, path) for path in job["inputs"]), (command, dep)


def test_every_default_run_has_its_stages(project, default_params):
    """The matrices expand over the whole grid of params.yaml: one training and one
    normalization stage per model and vocabulary size."""
    names = {stage["name"] for stage in dvc_stages(project)}
    for model in default_params["models"]:
        for vocab_size in default_params["tokenizer"]["vocab_sizes"]:
            assert {f"train@{model}-{vocab_size}", f"normalize@{model}-{vocab_size}"} <= names


def test_dvc_yaml_estimates_every_registered_approach():
    """dvc.yaml cannot read the approach registry, so this keeps its matrix in step with it."""
    stages = read_yaml(REPO / "dvc.yaml")["stages"]
    assert stages["estimate"]["matrix"]["approach"] == list(APPROACHES)


def test_each_rules_file_runs_the_stages_of_its_package():
    """The package mirrors the workflow: every command a rule of `workflow/rules/<group>.smk`
    runs lives in `vocabscale.<group>`, and every command module has its two entry points."""
    rules = sorted((REPO / "workflow/rules").glob("*.smk"))
    commands = {}
    for path in rules:
        for command in re.findall(r'"vocabscale ([\w{}.-]+)', path.read_text()):
            commands[command.replace("{wildcards.approach}", "isoflops")] = path.stem
    assert len(set(commands.values())) == len(rules) - 1  # all but common.smk run commands
    for command, group in commands.items():
        module = command_entry(command)[0]
        assert module.startswith(f"vocabscale.{group}."), (command, module, group)
    for module, _ in COMMANDS.values():
        imported = importlib.import_module(module)
        assert callable(imported.add_arguments) and callable(imported.run), module
