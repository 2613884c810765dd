"""DVC on the real pipeline, in scratch git repositories copied from this checkout with the tiny
params: the hand-over from a Snakemake run, reruns of exactly the stages a params change
touches, push and pull through a local remote, checkpoints left out, metrics and plots, and
the code each stage declares."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from conftest import (
    REPO,
    copy_project,
    git,
    git_commit_all,
    git_project,
    lock_holder,
    run_in,
    subprocess_env,
    wait_for,
    write_params,
)
from dvc.dependency.param import ParamsDependency
from dvc.repo import Repo

from vocabscale.cli import command_entry
from vocabscale.config import read_yaml, schema
from vocabscale.estimate.approaches import APPROACHES
from vocabscale.sweep import run_grid


def repro(project: Path) -> list[str]:
    """`dvc repro`; the stages it ran, in order."""
    result = run_in(project, "dvc", "repro")
    return re.findall(r"^Running stage '([^']+)':", result.stdout + result.stderr, re.MULTILINE)


def dvc_status(project: Path) -> dict:
    """`dvc status` as JSON: empty when every stage is up to date."""
    return json.loads(run_in(project, "dvc", "status", "--json").stdout or "{}")


def edit_params(project: Path, change) -> None:
    params = read_yaml(project / "params.yaml")
    change(params)
    write_params(project / "params.yaml", params)


def artifact_hashes(project: Path) -> dict[str, str]:
    """sha256 of every file under results/, except what is deliberately not versioned: the
    training resume state and Snakemake's markers (.dvcignore)."""
    return {
        str(path.relative_to(project)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted((project / "results").rglob("*"))
        if path.is_file()
        and not path.is_relative_to(project / "results/checkpoints")
        and path.name != ".snakemake_timestamp"
    }


@pytest.mark.slow
def test_after_the_handover_dvc_has_nothing_to_run(handed_over, tmp_path, tiny_params_dict):
    project = copy_project(handed_over, tmp_path / "project")
    assert dvc_status(project) == {}
    assert repro(project) == []
    # and Snakemake agrees: recording the results changed none of them
    assert "Nothing to be done" in run_in(project, "snakemake", "--dry-run").stdout
    locked = read_yaml(project / "dvc.lock")["stages"]
    runs = len(run_grid(tiny_params_dict))
    assert sum(name.startswith("train@") for name in locked) == runs
    # the cache holds every artifact
    expected = artifact_hashes(project)
    shutil.rmtree(project / "results")
    run_in(project, "dvc", "checkout")
    assert artifact_hashes(project) == expected


@pytest.mark.slow
def test_the_handover_refuses_results_of_other_settings(handed_over, tmp_path):
    project = copy_project(handed_over, tmp_path / "project")
    lock = (project / "dvc.lock").read_text()
    edit_params(project, lambda p: p["normalize"].update(unigram_pseudocount=0.5))
    result = run_in(project, "vocabscale", "dvc-commit", check=False)
    assert result.returncode == 1
    assert "Snakemake has jobs left to run for params.yaml" in result.stderr
    assert (project / "dvc.lock").read_text() == lock


@pytest.mark.slow
def test_the_handover_refuses_results_older_than_their_code(handed_over, tmp_path):
    project = copy_project(handed_over, tmp_path / "project")
    lock = (project / "dvc.lock").read_text()
    with open(project / "src/vocabscale/runs/normalize.py", "a") as stream:
        stream.write("# an edit\n")
    result = run_in(project, "vocabscale", "dvc-commit", check=False)
    assert result.returncode == 1
    assert "Snakemake has jobs left to run for params.yaml" in result.stderr
    assert (
        "results/normalized/a-v320.csv (normalize): Updated input files: "
        "src/vocabscale/runs/normalize.py" in result.stderr
    )
    assert (project / "dvc.lock").read_text() == lock


@pytest.mark.slow
def test_the_handover_refuses_results_snakemake_has_no_record_of(local_workflow_run, tmp_path):
    """A finished Snakemake run whose records are gone, about to be handed over."""
    project = git_commit_all(copy_project(local_workflow_run, tmp_path / "project"))
    shutil.rmtree(project / ".snakemake" / "metadata")
    # without its records, Snakemake no longer sees that the settings changed
    edit_params(project, lambda p: p["normalize"].update(unigram_pseudocount=0.5))
    assert "Nothing to be done" in run_in(project, "snakemake", "--dry-run").stdout
    result = run_in(project, "vocabscale", "dvc-commit", check=False)
    assert result.returncode == 1
    assert "Snakemake has no record of making these outputs" in result.stderr
    assert "results/normalized/a-v320.csv (normalize)" in result.stderr
    assert not (project / "dvc.lock").exists()


@pytest.mark.slow
def test_snakemake_and_dvc_repro_never_write_one_run_at_once(handed_over, tmp_path):
    """`snakemake` trains a run; `dvc repro` of the same run meanwhile waits for it (the same
    command, the same output), writes nothing, and records the complete run Snakemake wrote:
    neither engine sees a failed job, so neither deletes the other's output."""
    project = copy_project(handed_over, tmp_path / "project")
    out = project / "results/runs/a-v320"
    # a new setting: DVC has no result of it in its run cache, so it runs the command
    edit_params(project, lambda p: p["models"]["a"].update(train_tokens=32768))
    snakemake = subprocess.Popen(
        ["snakemake", "--cores", "1", "results/runs/a-v320"],
        cwd=project,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    holder = wait_for(lambda: lock_holder(out), "Snakemake's job to lock the run")
    os.kill(holder["pid"], signal.SIGSTOP)  # the job holds the run until DVC's waits for it
    log = project / "logs/train/a-v320.log"
    try:
        dvc = subprocess.Popen(
            ["dvc", "repro", "--single-item", "train@a-320"],
            cwd=project,
            env={**subprocess_env(), "VOCABSCALE_LOCK_WAIT": "600"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        wait_for(lambda: "waiting up to 600 s" in log.read_text(), "DVC's stage to wait")
    finally:
        os.kill(holder["pid"], signal.SIGCONT)
    said = snakemake.communicate(timeout=600)[0]
    assert snakemake.returncode == 0, said[-3000:]
    dvc_said = dvc.communicate(timeout=600)[0]
    assert dvc.returncode == 0, dvc_said[-3000:]
    assert "vocabscale train" in holder["command"]
    assert f"was written by pid {holder['pid']} on host" in log.read_text()
    assert "nothing left to do" in log.read_text()
    assert len(pd.read_csv(out / "evals.csv")) == 4
    assert json.loads(run_in(project, "dvc", "status", "--json", "train@a-320").stdout) == {}


@pytest.mark.slow
def test_an_estimator_setting_reruns_that_estimator_and_the_report(handed_over, tmp_path):
    project = copy_project(handed_over, tmp_path / "project")
    edit_params(project, lambda p: p["estimate"]["derivative"].update(huber_delta=2e-3))
    assert repro(project) == ["estimate@derivative", "backtest", "report"]
    assert dvc_status(project) == {}
    # approach 1's options also set approach 2's anchor budget: every estimate stage declares
    # them (DVC's matrix cannot declare a key for one item alone)
    edit_params(project, lambda p: p["estimate"]["isoflops"].update(huber_delta=2e-3))
    assert set(repro(project)) == {*(f"estimate@{a}" for a in APPROACHES), "backtest", "report"}
    assert dvc_status(project) == {}


@pytest.mark.slow
def test_a_new_vocabulary_size_runs_its_stages_and_the_aggregates(
    handed_over, tmp_path, tiny_params_dict
):
    project = copy_project(handed_over, tmp_path / "project")
    edit_params(project, lambda p: p["tokenizer"]["vocab_sizes"].append(480))
    ran = repro(project)
    models = list(tiny_params_dict["models"])
    assert len(ran) == len(set(ran))
    assert set(ran) == {
        "train_tokenizer@480",
        "tokenize@480",
        "fit_tokenization",
        *(f"train@{model}-480" for model in models),
        *(f"normalize@{model}-480" for model in models),
        *(f"downstream@{model}-480" for model in models),
        "collect",
        "collect_downstream",
        *(f"estimate@{approach}" for approach in APPROACHES),
        "backtest",
        "report",
    }
    assert ran[-1] == "report"
    assert dvc_status(project) == {}
    assert 480 in set(pd.read_csv(project / "results/runs.csv")["vocab_size"])


@pytest.mark.slow
def test_push_clone_pull_restores_every_artifact(handed_over, tmp_path):
    origin = copy_project(handed_over, tmp_path / "origin")
    run_in(origin, "dvc", "remote", "add", "--default", "storage", str(tmp_path / "remote"))
    git(origin, "commit", "--quiet", "--all", "--message", "a DVC remote")
    run_in(origin, "dvc", "push")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "--quiet", str(origin), str(clone))
    assert not (clone / "results/runs.csv").exists()

    run_in(clone, "dvc", "pull")
    expected = artifact_hashes(origin)
    assert any(path.startswith("results/runs/") for path in expected)
    assert artifact_hashes(clone) == expected
    assert (origin / "results/checkpoints").is_dir()
    assert not (clone / "results/checkpoints").exists()  # resume state is not pushed
    assert dvc_status(clone) == {}

    # a new target: the report rebuilds from the pulled estimates, nothing trains
    target = {"name": "10M", "nnv": 1e7, "d_model": 256}
    edit_params(clone, lambda p: p["report"]["targets"].append(target))
    assert repro(clone) == ["report"]
    summary = json.loads((clone / "results/report/summary.json").read_text())
    assert summary["vocab_size.10M.recommended"] > 0


@pytest.mark.slow
def test_checkpoints_survive_reruns_and_are_not_tracked(handed_over, tmp_path):
    project = copy_project(handed_over, tmp_path / "project")
    state = project / "results/checkpoints/a-v320/state.pt"
    before = state.read_bytes(), artifact_hashes(project)
    result = run_in(project, "dvc", "repro", "--force", "--single-item", "train@a-320")
    assert "Running stage 'train@a-320'" in result.stdout
    # DVC left the resume state alone; the run resumed from it at its last step and wrote the
    # same bytes, so nothing downstream changed
    assert "resuming results/runs/a-v320 from step" in result.stdout + result.stderr
    assert (state.read_bytes(), artifact_hashes(project)) == before
    assert dvc_status(project) == {}
    shutil.rmtree(project / "results/checkpoints")
    assert dvc_status(project) == {}
    assert repro(project) == []


@pytest.mark.slow
def test_metrics_and_plots(handed_over, tmp_path, tiny_params_dict):
    shown = json.loads(run_in(handed_over, "dvc", "metrics", "show", "--json").stdout)
    (workspace,) = shown.values()
    metrics = workspace["data"]["results/report/summary.json"]["data"]
    table = pd.read_csv(handed_over / "results/report/predictions.csv").set_index(
        ["target", "approach"]
    )
    for target in tiny_params_dict["report"]["targets"]:
        name = target["name"]
        assert metrics[f"vocab_size.{name}.recommended"] > 0
        assert metrics[f"band_low.{name}"] <= metrics[f"vocab_size_rounded.{name}.recommended"]
        for approach in APPROACHES:  # a number, or no answer and why
            key = f"vocab_size.{name}.{approach}"
            assert metrics[key] > 0 if key in metrics else table.loc[(name, approach), "reason"]
    runs = len(run_grid(tiny_params_dict))
    assert metrics["runs"] == runs
    assert metrics["checkpoints"] == runs * tiny_params_dict["train"]["evals"]

    shown = json.loads(run_in(handed_over, "dvc", "plots", "show", "--json").stdout)
    assert "errors" not in shown, shown.get("errors")
    plots = shown["data"]
    sources = {
        "loss_vs_compute": handed_over / "results/runs.csv",
        "isoflops_envelope": handed_over / "results/report/isoflops_envelope.csv",
    }
    assert set(plots) == set(sources)
    for name, source in sources.items():
        (plot,) = plots[name]
        values = plot["content"]["data"]["values"]
        assert len(values) == len(pd.read_csv(source)) > 0, name
        assert plot["content"]["encoding"]["x"]["field"] == "flops"
        assert plot["content"]["encoding"]["y"]["field"] == "loss_u"
    run_in(handed_over, "dvc", "plots", "show", "--out", str(tmp_path / "plots"))
    page = (tmp_path / "plots/index.html").read_text()
    assert "vegaEmbed" in page and "IsoFLOPs envelope" in page


# --- the code each stage declares ------------------------------------------------------------


def stage_module(subcommand: str) -> str:
    """The module that `vocabscale <subcommand>` runs (the CLI's own table)."""
    entry = command_entry(subcommand)
    assert entry, f"vocabscale {subcommand}: no such command"
    return entry[0]


#: Shared by every stage and computing none of their outputs (dvc.yaml says why).
PLUMBING = {"vocabscale", "vocabscale.cli", "vocabscale.config", "vocabscale.io"}


def module_file(name: str) -> Path:
    base = REPO.joinpath("src", *name.split("."))
    return base.with_suffix(".py") if base.with_suffix(".py").exists() else base / "__init__.py"


def vocabscale_imports(name: str) -> set[str]:
    """The vocabscale modules `name` imports anywhere in its file, and their packages."""
    found = set()
    for node in ast.walk(ast.parse(module_file(name).read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if module_file(submodule).exists() else node.module)
    found = {module for module in found if module.split(".")[0] == "vocabscale"}
    return found | {module.rsplit(".", 1)[0] for module in found if module.count(".") > 1}


def code_of(module: str) -> set[str]:
    """The files of `module` and of everything it imports, transitively, but the plumbing."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name not in seen and name not in PLUMBING:
            seen.add(name)
            todo += vocabscale_imports(name)
    return {str(module_file(name).relative_to(REPO)) for name in seen}


def covers(dependency: str, path: str) -> bool:
    return path == dependency or path.startswith(dependency + "/")


def test_each_stage_declares_the_code_it_runs(tmp_path):
    project = git_project(tmp_path / "project")
    with Repo(str(project)) as repo:
        stages = list(repo.index.stages)
    assert stages
    for stage in stages:
        code = code_of(stage_module(stage.cmd.split()[1]))
        declared = {
            str(d.def_path)
            for d in stage.deps
            if str(d.def_path).startswith("src/") and not isinstance(d, ParamsDependency)
        }
        missing = sorted(path for path in code if not any(covers(d, path) for d in declared))
        unused = sorted(d for d in declared if not any(covers(d, path) for path in code))
        assert not missing and not unused, f"{stage.name}: undeclared {missing}, unused {unused}"


# --- the settings each stage declares ---------------------------------------------------------

SCHEMA_FILE = "src/vocabscale/schemas/params.schema.yaml"

#: Settings that change no output, so that no stage declares them (dvc.yaml says why).
CHANGE_NO_OUTPUT = (
    "tokenizer.batch_documents",
    "tokenizer.batch_characters",
    "tokenizer.checkpoint_seconds",
    "tokenizer.tokenize_jobs",
    "cluster",
    "live",  # where the training curves are sent as they come, beside the outputs
)


def declared_settings() -> dict[str, tuple[list[str], list[str]]]:
    """Each stage of dvc.yaml (matrix items filled in: `*` for a model, each approach): the
    params.yaml keys it declares, and the schema sections."""
    found = {}
    for name, stage in read_yaml(REPO / "dvc.yaml")["stages"].items():
        for approach in APPROACHES if name == "estimate" else [None]:
            plain, schema = [], []
            for entry in stage.get("params", []):
                keys, target = (
                    ([entry], plain) if isinstance(entry, str) else (entry[SCHEMA_FILE], schema)
                )
                target += [
                    key.replace("${item.model}", "*").replace("${item.approach}", str(approach))
                    for key in keys
                ]
            found[f"{name}@{approach}" if approach else name] = (plain, schema)
    return found


def schema_node(path: str) -> dict:
    node = schema()
    for part in path.split("."):
        node = node[part]
    return node


def schema_path(section: str) -> str:
    """Where a params key's entry is in the schema (`*`: an entry of a map)."""
    return ".".join(
        "additionalProperties" if part == "*" else f"properties.{part}"
        for part in section.split(".")
    )


def defaults_in(node: dict, key: str, holder: str) -> Iterator[tuple[str, str]]:
    """(settings key, the schema section its default is written in) for every default at or
    under a schema node; `*` stands for an entry of a map or an item of a list."""
    if "$ref" in node:
        target = node["$ref"].removeprefix("#/").replace("/", ".")
        yield from defaults_in(schema_node(target), key, target)
    if "default" in node:
        yield key, holder
    for name, child in (node.get("properties") or {}).items():
        yield from defaults_in(child, f"{key}.{name}".lstrip("."), holder)
    for name in ("additionalProperties", "items"):
        if isinstance(node.get(name), dict):
            yield from defaults_in(node[name], f"{key}.*", holder)


def is_under(key: str, section: str) -> bool:
    parts, under = key.split("."), section.split(".")
    return len(parts) >= len(under) and all(s in ("*", p) for p, s in zip(parts, under))


#: Sections a stage declares for their names only, not their settings: collect's runs are the
#: grid of model names x vocabulary sizes (the shapes, which have no defaults, count too).
NAMES_ONLY = {("collect", "models"), ("collect_downstream", "models")}


def test_every_default_is_declared_by_the_stages_that_read_it():
    """Every key with a default lies in a section some stage declares, or changes no output;
    and a stage that declares a section also declares the parts of the schema where that
    section's defaults are written, so that DVC sees a change of default."""
    declared = declared_settings()
    for key, _ in defaults_in(schema(), "", ""):
        declaring = [stage for stage, (plain, _) in declared.items() if any(
            is_under(key, section) for section in plain)]  # fmt: skip
        assert declaring or any(is_under(key, s) for s in CHANGE_NO_OUTPUT), key
    for stage, (plain, schema_sections) in declared.items():
        for section in plain:
            if (stage, section) in NAMES_ONLY:
                continue
            path = schema_path(section)
            holders = {holder for _, holder in defaults_in(schema_node(path), section, path)}
            missing = sorted(holders - set(schema_sections))
            assert not missing, f"{stage} declares {section}: declare {missing} of {SCHEMA_FILE}"
