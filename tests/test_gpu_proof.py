"""The GPU proof (benchmarks/gpu): its smoke run passes on the CPU within a minute of CPU time and
records every part's figures; its verdict fails when the resume does not reproduce the run
or a part breaks; and the wheels it carries to the GPU machine are exactly what that
machine's image lacks of what the proof imports (checked without a network: the image is
simulated by blocking every other installed distribution)."""

import json
import os
import re
import resource
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pandas as pd
import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
GPU = REPO / "benchmarks" / "gpu"
sys.path[:0] = [str(GPU), str(REPO / "benchmarks")]

import proof  # noqa: E402
import proof_report  # noqa: E402
import proof_resume  # noqa: E402
from bench_train import HEADS  # noqa: E402
from proof_common import Settings  # noqa: E402

#: What the lent GPU machine's python3 has (its documentation), with their own dependencies.
IMAGE = (
    "torch",
    "numpy",
    "pandas",
    "scipy",
    "pyyaml",
    "tokenizers",
    "matplotlib",
    "markdown-it-py",
    "safetensors",
    "transformers",
)
SMOKE_SECONDS = 60


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_list() -> dict[str, str]:
    """benchmarks/gpu/wheels.txt: name -> pinned version."""
    pins = {}
    for line in (GPU / "wheels.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[normalized(name)] = version
    return pins


def image_distributions() -> set[str]:
    """The image's packages and everything they require (as installed here, extras aside)."""
    found, todo = set(), list(IMAGE)
    while todo:
        name = normalized(todo.pop())
        if name in found:
            continue
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            pytest.skip(f"{name} is not installed here: the image's closure is unknown")
        found.add(name)
        for text in requires:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return found


# --- the smoke run ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """`proof.sh --smoke` once: its exit status, seconds, output and results."""
    out = tmp_path_factory.mktemp("gpu-proof")
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable}
    started, cpu = time.monotonic(), children_cpu_seconds()
    result = subprocess.run(
        ["bash", str(GPU / "proof.sh"), "--smoke"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    seconds = {"wall": time.monotonic() - started, "cpu": children_cpu_seconds() - cpu}
    data = json.loads((out / "gpu_proof.json").read_text())
    return result, seconds, data, (out / "gpu_proof.md").read_text(), out


def test_the_smoke_run_passes_within_a_minute_of_cpu(smoke):
    """CPU seconds, not wall seconds: the CI machine's two cores are shared with another
    worker, so the wall time says more about the load than about the proof."""
    result, seconds, data, _, out = smoke
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    timing = {name: (part["wall_s"], part["cpu_s"]) for name, part in data["parts"].items()}
    assert seconds["cpu"] < SMOKE_SECONDS, f"{seconds} s; parts (wall, CPU s): {timing}"
    assert data["passed"] and data["smoke"]
    assert {name: part["status"] for name, part in data["parts"].items()} == dict.fromkeys(
        Settings.for_run(True).caps, "ok"
    )
    assert all(check["passed"] for check in data["checks"])
    assert "[steps] ok" in result.stdout and "proof: PASSED" in result.stdout
    assert "resuming" in (out / "resume.log").read_text()


def test_every_training_step_case_has_its_figures(smoke):
    _, _, data, markdown, _ = smoke
    settings = Settings.for_run(True)
    cases = data["parts"]["steps"]["cases"]
    planned = {(s, v, c) for s in settings.shapes for v in settings.vocab_sizes for c in (0, 1)}
    assert {(c["shape"], c["vocab_size"], int(c["compile"])) for c in cases} == planned
    for case in cases:
        assert case["status"] == "ok", case
        for key in ("tokens_per_s", "flops_per_token", "achieved_flops", "peak_bytes"):
            assert case[key] > 0, (key, case)
        assert case["plan_bytes"] > 0 and case["peak_over_plan"] > 0
        assert case["flash_events"] > 0  # the model's attention ran on SDPA's flash kernel
        assert case["precision"] == "bf16" and case["micro_batch"] == 4  # the paper preset
        compiled = "on" if case["compile"] else "off"
        assert f"| {case['shape']} | {case['vocab_size']:,} | {compiled} |" in markdown
    assert data["parts"]["steps"]["peak_flops"] is None  # a CPU: no MFU, and it says why
    assert "no MFU" in data["parts"]["steps"]["peak_note"]


def test_every_loss_head_is_measured_or_skipped_with_a_reason(smoke):
    _, _, data, markdown, _ = smoke
    cases = data["parts"]["heads"]["cases"]
    assert {(c["vocab_size"], c["head"]) for c in cases} == {
        (v, h) for v in Settings.for_run(True).head_vocab_sizes for h in HEADS
    }
    for case in cases:
        if case["head"] == "liger":
            assert case["status"].startswith("skipped: liger runs on CUDA only")
            continue
        assert case["status"] == "ok", case
        assert case["gradient_bytes"] > 0 and case["seconds"] > 0 and case["rows"] > 0
        assert "peak_bytes" in case
        assert f"| {case['vocab_size']:,} | {case['head']} | {case['rows']} |" in markdown


def test_the_short_run_resumes_after_sigterm_to_the_same_evaluations(smoke):
    _, _, data, markdown, _ = smoke
    case = data["parts"]["resume"]["cases"][0]
    assert case["passed"] and case["preempted"] and case["exit_after_resume"] == 0
    assert 0 < case["stopped_at_step"] == case["resumed_from_step"] < case["total_steps"]
    assert case["precision"] == "fp32" and case["max_relative_difference"] == 0  # bit for bit
    losses = [point["reference"] for point in case["points"]]
    assert losses == sorted(losses, reverse=True)  # it learns
    assert "## Resume after SIGTERM" in markdown and "**PASSED**" in markdown


# --- the verdict --------------------------------------------------------------------------------


def test_a_resume_beyond_tolerance_fails_the_proof():
    reference = pd.DataFrame({"step": [10, 20], "eval_ce_sum": [500.0, 400.0], "eval_tokens": 100})
    close = reference.assign(eval_ce_sum=[500.0, 400.5])  # 1.2e-3: within bf16 rounding
    far = reference.assign(eval_ce_sum=[500.0, 410.0])  # 2.5%
    tolerance = proof_resume.TOLERANCE["bf16"]
    assert proof_resume.compare(reference, close, tolerance)["evals_match"]
    assert not proof_resume.compare(reference, far, tolerance)["evals_match"]
    assert not proof_resume.compare(reference, close, proof_resume.TOLERANCE["fp32"])["evals_match"]
    assert not proof_resume.compare(reference, reference.iloc[:1], tolerance)["evals_match"]

    resume = {"status": "ok", "passed": False, "stopped_at_step": 3, "total_steps": 9}
    resume.update(preempted=True, resumed_from_step=3, max_relative_difference=0.1)
    parts = {
        "heads": {"status": "ok", "cases": []},
        "resume": {"status": "ok", "cases": [{**resume, "tolerance": tolerance}]},
        "steps": {"status": "timed out at its 200 s cap", "cases": []},
    }
    verdict = proof_report.evaluate(parts, Settings.for_run(False))
    assert not verdict["passed"]  # a timed-out part alone would not fail it
    assert [c["passed"] for c in verdict["checks"]] == [True, True, None, False]


def test_a_part_killed_at_its_cap_keeps_what_it_measured(tmp_path):
    record = {"cases": [{"status": "ok"}, {"status": "running"}, {"status": "pending"}]}
    status = proof.part_status(record, None, 200, tmp_path / "stderr")
    assert status == "timed out at its 200 s cap"
    assert [case["status"] for case in record["cases"]] == ["ok", "timed out", "timed out"]

    (tmp_path / "stderr").write_text("Traceback ...\nRuntimeError: CUDA error\n")
    record = {"cases": [{"status": "pending"}]}
    assert proof.part_status(record, 1, 200, tmp_path / "stderr").endswith("CUDA error")
    assert record["cases"][0]["status"] == "not run: the part broke"


# --- what travels to the GPU machine ------------------------------------------------------------


def test_the_wheels_are_only_packages_the_image_lacks():
    pins = wheel_list()
    image = image_distributions()
    assert not set(pins) & image, "the GPU image has these already"
    assert {"jsonschema", "liger-kernel"} <= set(pins)
    for name in pins:  # every dependency of a carried wheel is carried too, or in the image
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue  # liger-kernel: not installed on a CPU machine
        for text in requires:
            requirement = Requirement(text)
            env = {"extra": "", "python_version": "3.12"}
            if requirement.marker is None or requirement.marker.evaluate(env):
                assert normalized(requirement.name) in set(pins) | image, (name, text)


#: Python run as if on the GPU machine: a module of an installed distribution outside
#: argv[1] is not found (as if not installed), so optional imports skip it and required ones
#: fail; prints the allowed distributions it imported.
BLOCKER = """
import importlib.abc, importlib.machinery, json, sys
from importlib import metadata
allowed, owners, used = set(json.loads(sys.argv[1])), metadata.packages_distributions(), set()
norm = lambda name: name.replace("_", "-").replace(".", "-").lower()
class Image(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        dists = {norm(d) for d in owners.get(name.split(".")[0], [])}
        if spec is None or not dists:
            return spec
        used.update(dists & allowed)
        return spec if dists & allowed else None
finders = [f for f in sys.meta_path if f is not importlib.machinery.PathFinder]
sys.meta_path[:] = [*finders, Image()]
import proof, proof_heads, proof_resume, proof_steps, vocabscale.cli, vocabscale.train.stage
import torch._dynamo, torch.profiler
print(json.dumps(sorted(used)))
"""


def test_the_proof_imports_nothing_but_the_image_and_the_wheels():
    """The proof's modules and `vocabscale train`'s, with every distribution outside the image
    and the wheel list made unimportable (optional imports may fail; required ones may not)."""
    pins = wheel_list()
    allowed = image_distributions() | set(pins) | {"vocabscale"}
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}:{REPO / 'benchmarks'}:{GPU}"}
    command = [sys.executable, "-c", BLOCKER, json.dumps(sorted(allowed))]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    carried = set(json.loads(result.stdout.splitlines()[-1])) & set(pins)
    assert carried == set(pins) - {"liger-kernel"}  # each is needed (liger: on CUDA)


def test_prepare_downloaded_one_wheel_per_listed_package():
    """After benchmarks/gpu/prepare.sh (it needs a package index, so CI skips this)."""
    folder = REPO / ".gpu-wheels"
    wheels = sorted(folder.glob("*.whl"))
    if not wheels:
        pytest.skip("no .gpu-wheels/: run benchmarks/gpu/prepare.sh")
    found = {normalized(w.name.split("-")[0]): w.name.split("-")[1] for w in wheels}
    assert found == wheel_list()
    assert all("cp312" in w.name or "py3-none-any" in w.name for w in wheels)
    assert sum(w.stat().st_size for w in wheels) < 16 * 2**20
