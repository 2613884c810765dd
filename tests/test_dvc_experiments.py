"""DVC experiments on the real pipeline, in scratch git repositories holding the Snakemake run
of the tiny params handed over to DVC (conftest's `handed_over`): `dvc exp run -S` reruns only
what the changed setting touches, a queued sweep runs and `dvc exp show` lists its metrics side
by side; live training curves change no output under `dvc repro`."""

from __future__ import annotations

import json
import re
import shutil
import time

import pytest
from conftest import copy_project, run_in
from test_dvc import dvc_status, edit_params

pytestmark = pytest.mark.slow

HUBER = "estimate.parametric.huber_delta"
PREDICTED = "vocab_size.tiny.recommended"
FITTED = "r_squared.parametric"  # the tiny runs' approach 3 is degenerate: no V of its own


def stages_run(output: str) -> list[str]:
    return re.findall(r"^Running stage '([^']+)':", output, re.MULTILINE)


def run_queue(project, timeout: float = 1200) -> None:
    """`dvc queue start`, then `dvc queue status` until no experiment is queued or running,
    then `dvc queue stop`. (`dvc exp run --run-all` does the same in one command, but its
    worker can hang after the last experiment: a known DVC bug.)"""
    run_in(project, "dvc", "queue", "start", "--jobs", "1")
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            status = run_in(project, "dvc", "queue", "status").stdout
            # a finished task may be listed twice, as running and as done: done wins
            tasks = re.findall(r"^([0-9a-f]{7,})\s.*\s(\w+)\s*$", status, re.MULTILINE)
            done = {task: state for task, state in tasks if state in ("Success", "Failed")}
            if tasks and {task for task, _ in tasks} <= set(done):
                assert set(done.values()) == {"Success"}, status
                return
            time.sleep(5)
        raise AssertionError(f"the queue did not finish in {timeout:.0f} s:\n{status}")
    finally:
        run_in(project, "dvc", "queue", "stop", "--kill", check=False)


def experiments(project) -> dict[str, dict]:
    """`dvc exp show --json`: each experiment's name (not the workspace's or the commit's it
    started from) -> its params.yaml and summary.json."""
    shown = json.loads(run_in(project, "dvc", "exp", "show", "--json").stdout)
    found = {}

    def walk(entry, experiment: bool):
        if isinstance(entry, list):
            for item in entry:
                walk(item, experiment)
        elif isinstance(entry, dict):
            if experiment and entry.get("name") and entry.get("data"):
                data = entry["data"]
                found[entry["name"]] = {
                    "params": data["params"]["params.yaml"]["data"],
                    "metrics": data["metrics"]["results/report/summary.json"]["data"],
                }
            for key, value in entry.items():
                walk(value, experiment or key == "experiments")

    walk(shown, experiment=False)
    return found


def test_an_experiment_with_a_new_setting_reruns_only_the_estimate_backtest_and_report(
    handed_over,
    tmp_path,
):
    project = copy_project(handed_over, tmp_path / "project")
    result = run_in(project, "dvc", "exp", "run", "--name", "huber-0.01", "-S", f"{HUBER}=0.01")
    # the backtest refits approach 3 with the new setting, so it reruns too
    expected = ["estimate@parametric", "backtest", "report"]
    assert stages_run(result.stdout + result.stderr) == expected
    shown = experiments(project)
    assert shown["huber-0.01"]["params"]["estimate"]["parametric"]["huber_delta"] == 0.01
    assert shown["huber-0.01"]["metrics"][PREDICTED] > 0
    assert FITTED in shown["huber-0.01"]["metrics"]


def test_a_queued_sweep_runs_and_dvc_exp_show_lists_it_side_by_side(
    handed_over,
    tmp_path,
):
    project = copy_project(handed_over, tmp_path / "project")
    run_in(project, "dvc", "exp", "run", "--queue", "-S", f"{HUBER}=0.003,0.3")
    run_queue(project)
    shown = experiments(project)
    deltas = {
        name: entry["params"]["estimate"]["parametric"]["huber_delta"]
        for name, entry in shown.items()
    }
    assert sorted(deltas.values()) == [0.003, 0.3]
    assert all(shown[name]["metrics"][PREDICTED] > 0 for name in deltas)
    assert all(FITTED in shown[name]["metrics"] for name in deltas)
    table = run_in(project, "dvc", "exp", "show", "--md", "--only-changed").stdout
    assert HUBER.rsplit(".", 1)[0] in table or "huber_delta" in table
    assert dvc_status(project) == {}  # the sweep ran beside the workspace, not in it


def test_live_curves_change_no_output_under_dvc_repro(handed_over, tmp_path):
    project = copy_project(handed_over, tmp_path / "project")
    pipeline = (project / "dvc.yaml").read_bytes()
    edit_params(project, lambda p: p.update(live={"logger": "dvclive"}))
    assert dvc_status(project) == {}  # no stage declares the logging settings
    assert "Nothing to be done" in run_in(project, "snakemake", "--dry-run").stdout
    shutil.rmtree(project / "results/checkpoints/a-v320")  # so that it trains from step 0
    result = run_in(project, "dvc", "repro", "--force", "--single-item", "train@a-320")
    assert "Running stage 'train@a-320'" in result.stdout
    loss = (project / "logs/live/a-v320/plots/metrics/train/loss.tsv").read_text().splitlines()
    assert len(loss) > 10
    assert (project / "dvc.yaml").read_bytes() == pipeline  # DVCLive left it alone
    assert dvc_status(project) == {}  # the retrained run wrote the bytes DVC had recorded
