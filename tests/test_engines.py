"""The Snakefile and dvc.yaml describe one pipeline: for the default params, every Snakemake job
and every DVC stage pair up by their command, and each pair writes the same outputs from the
same inputs and code. A stage, an argument or an output that one engine gains and the other
lacks fails here. And after a change to a stage's code, to a setting in params.yaml or to a
default in the params schema, `snakemake -n` and `dvc status` name the same stages."""

from __future__ import annotations

import copy
import importlib
import json
import os
import re
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import pytest
import yaml
from conftest import (
    REPO,
    copy_project,
    files_of,
    git_project,
    run_in,
    subprocess_env,
    write_params,
)
from dvc.dependency.param import ParamsDependency
from dvc.repo import Repo

from vocabscale.cli import COMMANDS, command_entry
from vocabscale.config import read_yaml
from vocabscale.estimate.approaches import APPROACHES
from vocabscale.io import OUTPUT_MARKER


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
    """Every stage of dvc.yaml, matrices expanded: name, command, dependencies (inputs and code,
    not the params) and outputs."""
    with Repo(str(project)) as repo:
        return [
            {
                "name": stage.name,
                "command": one_line(stage.cmd),
                "inputs": {
                    str(dep.def_path) for dep in stage.deps if not isinstance(dep, ParamsDependency)
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
        # the same code (Snakemake takes it as inputs); DVC may name a directory where
        # Snakemake lists the files in it, no more
        assert any(path.startswith("src/") for path in job["inputs"]), command
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


def test_a_params_file_whose_path_has_a_space_reaches_every_job_whole(project, tmp_path):
    """Every rule quotes the paths of its command: `--configfile "my params.yaml"` once split
    the command (`--params my params.yaml`)."""
    configfile = tmp_path / "my settings" / "my params.yaml"
    configfile.parent.mkdir()
    configfile.write_text((project / "params.yaml").read_text())
    result = run_in(
        project,
        *("snakemake", "--configfile", str(configfile), "--forceall", "--dry-run"),
        *("--printshellcmds", "--cores", "1"),
        timeout=300,
    )
    commands = [
        shlex.split(line.removeprefix("Shell command: "))
        for line in result.stdout.splitlines()
        if line.startswith("Shell command: vocabscale ")
    ]
    jobs = re.findall(r"^(?:local)?rule (?!all:)\w+:$", result.stdout, flags=re.M)
    assert commands and len(commands) == len(jobs)
    for argv in commands:
        assert argv[argv.index("--params") + 1] == str(configfile), argv


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


# --- tokenization as parallel jobs -------------------------------------------------------------


@pytest.mark.slow
def test_tokenize_jobs_split_each_v_for_snakemake_and_dvc_records_the_same_tokens(
    tmp_path, tiny_params_dict
):
    """With tokenizer.tokenize_jobs: 3, Snakemake runs three part jobs per V and a gather that
    writes the tokens of the one job dvc.yaml runs: `dvc repro` of that stage writes the same
    bytes, and DVC, given Snakemake's tokens, finds its stage up to date."""
    params = copy.deepcopy(tiny_params_dict)
    params["corpus"]["shard_characters"] = 50_000
    params["tokenizer"]["tokenize_jobs"] = 3
    project = git_project(tmp_path / "project", params)
    jobs = snakemake_jobs(project)
    stage_of = {out: stage["name"] for stage in dvc_stages(project) for out in stage["outputs"]}
    for vocab in params["tokenizer"]["vocab_sizes"]:
        parts = [f"results/token_parts/v{vocab}/{part}" for part in range(3)]
        part_jobs = [job for job in jobs if job["outputs"] & set(parts)]
        assert sorted(out for job in part_jobs for out in job["outputs"]) == parts
        for part, job in zip(range(3), sorted(part_jobs, key=lambda job: min(job["outputs"]))):
            assert job["rule"] == "tokenize_part"
            assert f"--part {part} --out {parts[part]} " in job["command"]
        (gather,) = [job for job in jobs if job["outputs"] == {f"results/tokens/v{vocab}"}]
        assert gather["rule"] == "tokenize" and set(parts) <= gather["inputs"]
        assert f"--parts {' '.join(parts)} --out results/tokens/v{vocab} " in gather["command"]
        assert stage_of[f"results/tokens/v{vocab}"] == f"tokenize@{vocab}"

    run_in(project, "snakemake", "--cores", "2", "results/tokens/v320", timeout=600)
    assert not list((project / "results/token_parts").glob("v320/*"))  # temporary: gone
    gathered = files_of(project / "results/tokens/v320")
    stages = ("prepare_corpus", "train_tokenizer@320", "tokenize@320")
    run_in(project, "dvc", "commit", "--force", *stages)
    assert json.loads(run_in(project, "dvc", "status", "--json", *stages).stdout) == {}
    run_in(project, "dvc", "repro", "--force", "--single-item", "tokenize@320", timeout=600)
    assert files_of(project / "results/tokens/v320") == gathered
    assert set(gathered) == {"train.bin", "validation.bin", "unigram_counts.npy", "stats.json"} | {
        OUTPUT_MARKER
    }


# --- after a change, both engines name the same stages ----------------------------------------


def reruns(project: Path, stage_of: dict[str, str]) -> tuple[set[str], set[str]]:
    """(the jobs `snakemake --dry-run` schedules, by their dvc.yaml stage names, found through
    `stage_of`: output -> stage; the stages `dvc status` names), both run at once."""
    env = subprocess_env()
    commands = (["snakemake", "--dry-run"], ["dvc", "status", "--json"])
    running = [
        subprocess.Popen(argv, cwd=project, env=env, stdout=subprocess.PIPE, text=True)
        for argv in commands
    ]
    snakemake, dvc = (process.communicate(timeout=300)[0] for process in running)
    assert all(process.returncode == 0 for process in running), snakemake[-3000:] + dvc
    outputs = re.findall(r"^\s+output: ([^,\n]+)", snakemake, re.MULTILINE)
    return {stage_of[output] for output in outputs}, set(json.loads(dvc or "{}"))


def downstream(graph: nx.DiGraph, stages: set[str]) -> set[str]:
    """The stages and every stage after them: what `dvc repro` may have to run once they ran
    (a stage whose inputs come out unchanged is skipped; Snakemake, judging by file times,
    runs it)."""
    by_name = {stage.name: stage for stage in graph}
    after = (nx.ancestors(graph, by_name[name]) for name in stages)  # edges point upstream
    return stages | {stage.name for found in after for stage in found}


def edit_code(path: str) -> Callable[[Path], None]:
    def change(project: Path) -> None:
        with open(project / path, "a") as stream:
            stream.write("\n# an edit\n")

    return change


def edit_setting(key: str, value) -> Callable[[Path], None]:
    """Write `key` (dotted) into params.yaml, where it may not have been before."""

    def change(project: Path) -> None:
        params = read_yaml(project / "params.yaml")
        *parents, last = key.split(".")
        node = params
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
        write_params(project / "params.yaml", params)

    return change


def edit_default(key: str, value) -> Callable[[Path], None]:
    """Change a default in the params schema: `key` is the dotted path of its `default:`."""

    def change(project: Path) -> None:
        path = project / "src/vocabscale/schemas/params.schema.yaml"
        schema = read_yaml(path)
        *parents, last = [*key.split("."), "default"]
        node = schema
        for part in parents:
            node = node[part]
        assert node[last] != value
        node[last] = value
        path.write_text(yaml.safe_dump(schema, sort_keys=False))

    return change


#: (what changes, how, the stages `dvc status` must name: a name without "@" stands for every
#: stage of its matrix). Snakemake must schedule those and every stage after them.
CHANGES = [
    ("code of one stage", edit_code("src/vocabscale/runs/normalize.py"), {"normalize"}),
    ("code of many stages", edit_code("src/vocabscale/accounting.py"),
     {"train", "collect", "estimate", "backtest", "report", "downstream", "collect_downstream"}),
    ("plumbing code", edit_code("src/vocabscale/config.py"), set()),
    ("a key left at its default", edit_setting("estimate.derivative.huber_delta", 2e-3),
     {"estimate@derivative", "backtest"}),
    ("approach 1's options, which approach 2's anchor reads",
     edit_setting("estimate.isoflops.nnv_points", 30), {"estimate", "backtest"}),
    ("the target fitted", edit_setting("estimate.target", "bpb"), {"estimate", "backtest"}),
    ("a key declared on its own", edit_setting("tokenizer.min_frequency", 3),
     {"train_tokenizer"}),
    ("a key that changes no output", edit_setting("tokenizer.batch_documents", 7), set()),
    ("the default of every approach's bootstrap",
     edit_default("properties.estimate.properties.bootstrap.properties.confidence", 0.8),
     {"estimate", "backtest"}),
    ("the default of one approach",
     edit_default("properties.estimate.properties.derivative.properties.huber_delta", 0.01),
     {"estimate@derivative", "backtest"}),
    ("a default of the report's targets", edit_default("$defs.target.properties.flops", 1e20),
     {"report"}),
    ("a default of training",
     edit_default("properties.train.properties.head_chunk_logits", 2**20), {"train"}),
    ("a default of the models", edit_default("$defs.model.properties.gpus", 2), {"train"}),
]  # fmt: skip


@dataclass
class Pipeline:
    """A project both engines hold up to date (each test restores it), and its stages."""

    project: Path
    stage_of: dict[str, str]  # output -> dvc.yaml stage
    graph: nx.DiGraph


@pytest.fixture(scope="module")
def up_to_date(handed_over, tmp_path_factory) -> Pipeline:
    project = copy_project(handed_over, tmp_path_factory.mktemp("engines") / "project")
    stage_of = {out: stage["name"] for stage in dvc_stages(project) for out in stage["outputs"]}
    with Repo(str(project)) as repo:
        graph = repo.index.graph.copy()
    pipeline = Pipeline(project, stage_of, graph)
    assert reruns(project, stage_of) == (set(), set())
    return pipeline


def stages_named(expected: set[str], stages) -> set[str]:
    return {stage.name for stage in stages if {stage.name, stage.name.split("@")[0]} & expected}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "expected"), [c[1:] for c in CHANGES], ids=[c[0] for c in CHANGES]
)
def test_a_change_reruns_the_same_stages_under_both_engines(up_to_date, change, expected):
    project = up_to_date.project
    files = ["params.yaml", "src/vocabscale/schemas/params.schema.yaml"]
    files += [str(path.relative_to(project)) for path in (project / "src").rglob("*.py")]
    kept = {name: ((project / name).read_bytes(), os.stat(project / name)) for name in files}
    try:
        change(project)
        snakemake, dvc = reruns(project, up_to_date.stage_of)
    finally:  # the project as it was, file times included (Snakemake judges by them)
        for name, (data, stat) in kept.items():
            (project / name).write_bytes(data)
            os.utime(project / name, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert dvc == stages_named(expected, up_to_date.graph)
    assert snakemake == downstream(up_to_date.graph, dvc)
