"""The whole pipeline through Snakemake on a small config: every stage real, end to end."""

import re

import pandas as pd
import pytest
from conftest import run_in

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def snakemake_run(local_workflow_run):
    return local_workflow_run


def test_report_has_three_predictions_per_target(snakemake_run, tiny_params_dict):
    report = (snakemake_run / "results/report/report.md").read_text()
    predictions = pd.read_csv(snakemake_run / "results/report/predictions.csv")
    for target in tiny_params_dict["report"]["targets"]:
        rows = [
            line.split("|")
            for line in report.splitlines()
            if line.startswith(f"| {target['name']} |") and line.count("|") > 8
        ]
        assert {row[4].strip() for row in rows} == {"IsoFLOPs", "Derivative", "Parametric"}
        for row in rows:  # V (rounded), or why the approach gives none
            assert re.fullmatch(r" ([\d,]+ \([\d,]+\)( †)?|no answer: .+) ", row[6]), row
        mine = predictions[predictions["target"] == target["name"]]
        assert set(mine["approach"]) == {"recommended", "isoflops", "derivative", "parametric"}
        answered = mine["vocab_size"].notna()
        assert (mine.loc[answered, "vocab_size"] > 0).all()
        assert mine.loc[~answered, "reason"].str.len().gt(0).all()
        assert answered[mine["approach"] == "recommended"].all()
    assert (snakemake_run / "results/report/figures/loss_vs_compute.png").stat().st_size > 10_000


def test_runs_table_has_every_checkpoint_of_every_run(snakemake_run, tiny_params_dict):
    runs = pd.read_csv(snakemake_run / "results/runs.csv")
    expected_runs = len(tiny_params_dict["models"]) * len(
        tiny_params_dict["tokenizer"]["vocab_sizes"]
    )
    assert runs["run_id"].nunique() == expected_runs
    assert len(runs) == expected_runs * tiny_params_dict["train"]["evals"]
    for column in (
        "run_id",
        "model",
        "vocab_size",
        "d_model",
        "non_vocab_params",
        "vocab_params",
        "step",
        "tokens",
        "characters",
        "flops",
        "loss",
        "loss_u",
        "bpc",
        "bpb",
        "diverged",
    ):
        assert runs[column].notna().all(), column
    # the FLOPs column is the paper's 6 (Nnv + V d) D
    expected = (
        6 * (runs["non_vocab_params"] + runs["vocab_size"] * runs["d_model"]) * runs["tokens"]
    )
    assert (abs(runs["flops"] / expected - 1) < 1e-9).all()


def test_every_rule_wrote_its_log(snakemake_run):
    logs = snakemake_run / "logs"
    for name in ("prepare_corpus.log", "fit_tokenization.log", "collect.log", "report.log"):
        assert (logs / name).stat().st_size > 0, name
    assert len(list((logs / "train").glob("*.log"))) == 6


def test_a_second_run_has_nothing_to_do(snakemake_run):
    result = run_in(snakemake_run, "snakemake", "--cores", "2", "-n", check=False)
    assert "Nothing to be done" in result.stdout + result.stderr
