"""Shared fixtures: a small real corpus, tokenizers trained on it, and tiny params files."""

from __future__ import annotations

import copy
import json
import os
import random
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from vocabscale.config import defaults, read_yaml
from vocabscale.corpus.shards import read_texts
from vocabscale.corpus.split import prepare_corpus
from vocabscale.tokenizer.batching import Batching
from vocabscale.tokenizer.one_job import tokenize_corpus
from vocabscale.tokenizer.training import train_tokenizer

REPO = Path(__file__).resolve().parents[1]


def tokenizer_settings(**overrides) -> Batching:
    """The batching a tokenize call takes: the defaults of the `tokenizer` settings but for
    `overrides`."""
    return Batching.from_params(defaults("tokenizer") | overrides)


def files_of(directory: Path) -> dict[str, bytes]:
    """The bytes of every file of an output directory, by name, but Snakemake's marker."""
    return {
        path.name: path.read_bytes()
        for path in sorted(directory.iterdir())
        if path.name != ".snakemake_timestamp"
    }


def train_tokenizer_with_defaults(sample: Path, vocab_size: int, out: Path, **overrides):
    settings = defaults("tokenizer") | overrides
    return train_tokenizer(
        sample, vocab_size, out, settings["min_frequency"], settings["batch_documents"]
    )


@pytest.fixture(scope="session")
def default_params() -> dict:
    """params.yaml as shipped (raw, before defaults are filled in)."""
    return read_yaml(REPO / "params.yaml")


def tiny_params(default_params: dict) -> dict:
    """A params dict small enough for an end-to-end run in about a minute on two cores."""
    params = copy.deepcopy(default_params)
    params["corpus"].update(
        validation_characters=8000, tokenizer_sample_characters=300_000, max_characters=400_000
    )
    params["tokenizer"]["vocab_sizes"] = [320, 640, 1280]
    params["models"] = {
        "a": {"n_layer": 1, "n_head": 2, "d_model": 32, "ffn": 64, "train_tokens": 49152},
        "b": {"n_layer": 2, "n_head": 2, "d_model": 48, "ffn": 96, "train_tokens": 65536},
    }
    params["train"].update(
        context=32, batch_tokens=2048, micro_batch_size=64, evals=4, threads=1, device="cpu"
    )
    # a CPU node for the SLURM tests: one core and a little memory per training job
    params["cluster"] = {"cpus_per_gpu": 1, "mem_mb_per_gpu": 1500, "cpu_job_runtime_minutes": 30}
    params["estimate"]["bootstrap"]["samples"] = 5
    params["estimate"]["derivative"]["nnv_grid"] = [1e4, 3e4, 1e5]
    params["report"]["targets"] = [
        {"name": "tiny", "nnv": 2e4, "d_model": 32},
        {"name": "1M", "nnv": 1e6, "d_model": 128},
    ]
    return params


@pytest.fixture(scope="session")
def tiny_params_dict(default_params) -> dict:
    return tiny_params(default_params)


def write_params(path: Path, params: dict) -> Path:
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory, tiny_params_dict) -> Path:
    """The builtin corpus, capped: real text, shared by the tests of a session."""
    from vocabscale.config import validate_params

    params = validate_params(copy.deepcopy(tiny_params_dict))
    out = tmp_path_factory.mktemp("corpus") / "corpus"
    prepare_corpus(params["corpus"], out)
    return out


@pytest.fixture(scope="session")
def tokenized(tmp_path_factory, corpus_dir) -> dict[int, Path]:
    """Tokenizer and token arrays for V = 320, 640, 1280."""
    root = tmp_path_factory.mktemp("tokens")
    out = {}
    for vocab_size in (320, 640, 1280):
        tokenizer = root / f"v{vocab_size}" / "tokenizer.json"
        train_tokenizer_with_defaults(
            corpus_dir / "tokenizer_sample.parquet", vocab_size, tokenizer
        )
        tokenize_corpus(
            corpus_dir,
            tokenizer,
            root / f"tokens-v{vocab_size}",
            tokenizer_settings(batch_documents=256),
        )
        out[vocab_size] = root / f"tokens-v{vocab_size}"
    return out


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tokenized) -> Path:
    """A real run of a tiny model (V = 640, 2 blocks, context 32), laid out as the pipeline
    lays out its results: `runs/t-v640/` beside `tokenizers/v640/tokenizer.json`."""
    from vocabscale.accounting import ModelShape
    from vocabscale.sweep import ModelSpec
    from vocabscale.train.config import TrainConfig
    from vocabscale.train.loop import train_run

    results = tmp_path_factory.mktemp("results")
    tokenizer = results / "tokenizers/v640/tokenizer.json"
    tokenizer.parent.mkdir(parents=True)
    shutil.copyfile(tokenized[640].parent / "v640/tokenizer.json", tokenizer)
    train = defaults("train") | {"seed": 0, "context": 32, "batch_tokens": 1024}
    train |= {"micro_batch_size": 32, "lr": 1e-2, "evals": 2, "device": "cpu", "threads": 1}
    spec = ModelSpec(
        "t", ModelShape(n_layer=2, n_head=2, d_model=32, ffn=64), 96 * 1024, 1, 1, "auto"
    )
    run = results / "runs/t-v640"
    train_run(spec, tokenized[640], TrainConfig.from_params(train), run, results / "ckpt")
    return run


def next_text_task(directory: Path, validation: Path, items: int = 48) -> Path:
    """An lm-evaluation-harness task over local files, so no hub: `next_text`, multiple
    choice. Each item is 100 characters of held-out text; the choices are the 20 characters
    that follow and three other such spans (chance: 25%), short enough for a context of 32
    tokens at V = 320. The YAML names its data files by absolute path (relative ones would be
    read from the working directory)."""
    rng = random.Random(0)
    pieces = []
    for text in read_texts(validation):
        text = " ".join(text.split())
        starts = range(0, len(text) - 119, 120)
        pieces += [(text[i : i + 100], text[i + 100 : i + 120]) for i in starts]
    rows = []
    for index, (context, answer) in enumerate(pieces[:items]):
        others = [cont for j, (_, cont) in enumerate(pieces) if j != index]
        choices = [answer, *rng.sample(others, 3)]
        rng.shuffle(choices)
        rows.append({"context": context, "choices": choices, "label": choices.index(answer)})
    directory.mkdir(parents=True, exist_ok=True)
    splits = {"train": rows[:8], "validation": rows[8:]}
    for split, split_rows in splits.items():
        lines = [json.dumps(row) for row in split_rows]
        (directory / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    config = {
        "task": "next_text",
        "dataset_path": "json",
        "dataset_kwargs": {
            "data_files": {split: str(directory / f"{split}.jsonl") for split in splits}
        },
        "output_type": "multiple_choice",
        "training_split": "train",
        "validation_split": "validation",
        "fewshot_split": "train",
        "doc_to_text": "{{context}}",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{label}}",
        "metric_list": [
            {"metric": metric, "aggregation": "mean", "higher_is_better": True}
            for metric in ("acc", "acc_norm")
        ],
        "metadata": {"version": 1.0},
    }
    (directory / "next_text.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return directory


def offline_env(hf_home: Path) -> dict[str, str]:
    """`subprocess_env()` for lm-evaluation-harness without the network: Hugging Face's
    offline switches (no hub lookups, no download-count pings) and a cache of its own."""
    return subprocess_env() | {
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(hf_home),
    }


#: What a scratch copy of the project holds: both engines' definitions, the code the DVC stages
#: depend on, and the DVC set-up.
PROJECT_FILES = (
    "Snakefile",
    "dvc.yaml",
    "params.yaml",
    "workflow",
    "cluster",
    "src",
    ".gitignore",
    ".dvcignore",
    ".dvc/config",
    ".dvc/.gitignore",
    ".dvc/plots",
)


def copy_repo(destination: Path) -> Path:
    """The project files of this checkout, without results, for runs in a scratch directory."""
    destination.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in PROJECT_FILES:
        source, target = REPO / name, destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True, ignore=ignore)
        elif source.exists():
            shutil.copy2(source, target)
    return destination


def subprocess_env() -> dict[str, str]:
    """Environment for engine subprocesses: this interpreter's scripts first on PATH."""
    env = dict(os.environ)
    bin_dir = str(Path(os.sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    return env


def run_in(
    cwd: Path,
    *argv: str,
    check: bool = True,
    env: dict[str, str] | None = None,
    timeout: float = 900,
) -> subprocess.CompletedProcess:
    """Run a command (snakemake, dvc, git, ...) in `cwd` with `subprocess_env()` unless `env`
    is given; with `check`, fail the test on a non-zero exit, showing the end of its output."""
    result = subprocess.run(
        list(argv),
        cwd=cwd,
        env=subprocess_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check:
        assert result.returncode == 0, (
            f"{' '.join(argv)}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )
    return result


def git(cwd: Path, *args: str) -> str:
    """Run git in `cwd` with a fixed identity; return its output, fail the test on an error."""
    identity = ["-c", "user.name=vocabscale tests", "-c", "user.email=tests@vocabscale.invalid"]
    return run_in(cwd, "git", *identity, *args, timeout=120).stdout


def git_commit_all(directory: Path) -> Path:
    """`directory` made a git repository with everything in it committed (DVC works in one)."""
    git(directory, "init", "--quiet")
    git(directory, "add", "--all")
    git(directory, "commit", "--quiet", "--message", "the project")
    return directory


def git_project(destination: Path, params: dict | None = None) -> Path:
    """A copy of the project (with `params` as params.yaml) committed to a new git repository."""
    copy_repo(destination)
    if params is not None:
        write_params(destination / "params.yaml", params)
    return git_commit_all(destination)


@pytest.fixture(scope="session")
def local_workflow_run(tmp_path_factory, tiny_params_dict) -> Path:
    """The tiny config run end to end with `snakemake --cores 2` in a scratch copy."""
    workdir = copy_repo(tmp_path_factory.mktemp("workflow"))
    write_params(workdir / "params.yaml", tiny_params_dict)
    run_in(workdir, "snakemake", "--cores", "2", "--quiet", "rules")
    return workdir


@pytest.fixture(scope="session")
def handed_over(local_workflow_run, tmp_path_factory) -> Path:
    """The Snakemake run of the tiny params, in a git repository, handed over to DVC with
    `vocabscale dvc-commit` and dvc.lock committed: both engines hold it up to date. Tests
    work on copies (`copy_project`). The code is the run's own copy, file times kept, so that
    an edit of this checkout meanwhile changes nothing."""
    project = tmp_path_factory.mktemp("handed_over") / "project"
    shutil.copytree(
        local_workflow_run, project, symlinks=True, ignore=shutil.ignore_patterns("locks")
    )
    git_commit_all(project)
    assert not (project / "dvc.lock").exists()
    run_in(project, "vocabscale", "dvc-commit")
    git(project, "add", "dvc.lock")
    git(project, "commit", "--quiet", "--message", "results of the Snakemake run")
    return project


def copy_project(source: Path, destination: Path) -> Path:
    """A copy of a project with its results and DVC cache (not DVC's state of this machine),
    file times kept (Snakemake judges by them)."""

    def ignore(directory: str, names: list[str]) -> list[str]:
        return ["tmp"] if Path(directory).name == ".dvc" else []

    shutil.copytree(source, destination, symlinks=True, ignore=ignore)
    return destination


def wait_for(condition: Callable[[], object], what: str, timeout: float = 120) -> object:
    """Poll `condition` until it returns something true; fail the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def lock_holder(output: Path) -> dict | None:
    """The holder recorded in an output's lock file, once it is written."""
    try:
        return json.loads((output.parent / f".{output.name}.lock").read_text())
    except (OSError, ValueError):
        return None


@pytest.fixture
def disk_events(monkeypatch) -> list[tuple[str, str]]:
    """Every fsync (of the path its descriptor names) and rename, in order; a test may add
    events of its own to the list."""
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(source, target) -> None:
        events.append(("rename", f"{source} -> {target}"))
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events
