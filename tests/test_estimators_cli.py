"""`vocabscale estimate`, `vocabscale predict` and the estimate stages, end to end on a runs
table from "another training stack" (renamed columns, no run_id)."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from vocabscale.estimate import synthetic
from vocabscale.estimate.published import PAPER_COEFFICIENTS

REPO = Path(__file__).resolve().parents[1]
THEIR_NAMES = {"non_vocab_params": "nnv", "loss_u": "unigram_normalized_loss"}


def vocabscale(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vocabscale", *args], capture_output=True, text=True, check=check
    )


@pytest.fixture(scope="module")
def their_table(tmp_path_factory) -> Path:
    law = synthetic.parametric_law(PAPER_COEFFICIENTS["parametric"])
    frame = synthetic.runs_table(
        law, synthetic.paper_models(4), (4096, 8192, 16384, 32768, 65536), 8, noise=0.002
    )
    path = tmp_path_factory.mktemp("theirs") / "theirs.csv"
    frame.drop(columns=["run_id", "model"]).rename(columns=THEIR_NAMES).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def estimated(their_table, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("estimates")
    renames = [f"--column={theirs}={ours}" for ours, theirs in THEIR_NAMES.items()]
    vocabscale(
        "estimate", "--runs", str(their_table), "--out", str(out), *renames,
        "--tokenization", "paper", "--bootstrap", "4", "--min-flops", "1e17",
    )  # fmt: skip
    return out


def test_estimate_writes_coefficients_and_predictions(estimated):
    coefficients = json.loads((estimated / "coefficients.json").read_text())
    assert set(coefficients) >= {"isoflops", "derivative", "parametric", "tokenization"}
    assert coefficients["tokenization"]["source"] == "paper"
    parametric = coefficients["parametric"]
    assert set(parametric) >= {"E", "A1", "A2", "B", "alpha1", "alpha2", "beta", "fit"}
    assert parametric["options"]["min_flops"] == 1e17  # the command line's, recorded
    assert parametric["options"]["authors_tokenization"] is False
    for approach in ("isoflops", "derivative", "parametric"):
        fitted = coefficients[approach]
        assert fitted["runs"] == 20
        assert len(fitted["bootstrap"]) == 4
        assert fitted["bootstrap_confidence"] == 0.9
        assert set(fitted["excluded_rows"]) >= {"non_finite"}
    assert coefficients["isoflops"]["options"]["densify"] is True
    assert coefficients["derivative"]["options"]["grid_widths"] == "runs"
    table = pd.read_csv(estimated / "predictions.csv")
    assert set(table.columns) >= {
        "target", "nnv", "d_model", "approach", "flops", "vocab_size", "vocab_params",
        "vocab_size_low", "vocab_size_high", "at_search_bound",
    }  # fmt: skip
    assert len(table) == 7 * (3 + 1)  # and the recommendation per target
    assert table["vocab_size_low"].notna().all()
    assert set(table.loc[table["approach"] == "recommended", "rule"].str[:22]) == {
        "the median of the appr"
    }  # no backtest was given: the stated fallback


def test_predict_from_estimated_coefficients(estimated):
    result = vocabscale(
        "predict", "--nnv", "7e9", "--coefficients", str(estimated / "coefficients.json"), "--json"
    )
    answer = json.loads(result.stdout)
    assert answer["nnv"] == 7e9 and answer["d_model"] == 4096
    for approach in ("isoflops", "derivative", "parametric"):
        value = answer["approaches"][approach]
        assert value["vocab_params"] == pytest.approx(value["vocab_size"] * 4096)
        low, high = value["vocab_size_interval"]
        assert low <= high
    recommended = answer["recommended"]
    assert set(recommended) >= {"vocab_size", "vocab_size_interval", "band", "flops", "rule"}
    low, high = recommended["vocab_size_interval"]
    assert low <= recommended["vocab_size"] <= high
    text = vocabscale("predict", "--nnv", "7e9", "--coefficients", str(estimated)).stdout
    assert "90% interval" in text and "recommended" in text


def test_estimate_options_are_recorded(their_table, tmp_path):
    renames = [f"--column={theirs}={ours}" for ours, theirs in THEIR_NAMES.items()]
    vocabscale(
        "estimate", "--runs", str(their_table), "--out", str(tmp_path), *renames,
        "--tokenization", "paper", "--bootstrap", "0", "--no-densify", "--free-exponents",
        "--derivative-anchor", "33e6", "6144", "512", "--derivative-grid-widths", "paper",
        "--derivative-nnv-grid", "33e6", "85e6", "151e6", "302e6", "631e6", "1.13e9", "2.87e9",
        "--authors-tokenization", "--min-flops", "1e17",
    )  # fmt: skip
    coefficients = json.loads((tmp_path / "coefficients.json").read_text())
    isoflops, derivative = coefficients["isoflops"], coefficients["derivative"]
    assert isoflops["options"] == {**isoflops["options"], "densify": False, "free_exponents": True}
    assert derivative["anchor"]["source"] == "given"
    assert derivative["gamma"] == pytest.approx(PAPER_COEFFICIENTS["derivative"]["gamma"], abs=1e-3)
    assert coefficients["parametric"]["options"]["authors_tokenization"] is True
    assert "true_tokenization" in coefficients["parametric"]


def test_bad_tables_fail_with_the_column_named(their_table, tmp_path):
    result = vocabscale("estimate", "--runs", str(their_table), "--out", str(tmp_path), check=False)
    assert result.returncode == 2
    assert "missing column(s) non_vocab_params, loss_u" in result.stderr
    assert "--column THEIRS=OURS" in result.stderr


def test_estimate_stage_reads_its_params_section(their_table, tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["estimate"]["bootstrap"]["samples"] = 2
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump(params))
    runs = tmp_path / "runs.csv"
    theirs = pd.read_csv(their_table)
    theirs.rename(columns={v: k for k, v in THEIR_NAMES.items()}).to_csv(runs, index=False)
    fit = tmp_path / "fit.json"
    fit.write_text(json.dumps(PAPER_COEFFICIENTS["tokenization"]))
    out = tmp_path / "parametric.json"
    vocabscale(
        "estimate-parametric", "--params", str(params_path), "--runs", str(runs),
        "--tokenization", str(fit), "--out", str(out),
    )  # fmt: skip
    result = json.loads(out.read_text())
    assert result["options"]["min_flops"] == params["estimate"]["parametric"]["min_flops"]
    assert len(result["bootstrap"]) == 2
    assert result["tokenization"]["source"] == str(fit)


def test_both_methods_side_by_side(their_table, tmp_path, default_params):
    """`--compare-authors` fits the authors' method beside the corrected one; predictions.csv
    and a report with `report.compare_authors` show both."""
    from vocabscale.config import validate_params
    from vocabscale.report.evidence import ReportInputs
    from vocabscale.report.stage import build_report

    renames = [f"--column={theirs}={ours}" for ours, theirs in THEIR_NAMES.items()]
    vocabscale(
        "estimate", "--runs", str(their_table), "--out", str(tmp_path), *renames,
        "--tokenization", "paper", "--bootstrap", "0", "--min-flops", "1e17",
        "--compare-authors",
    )  # fmt: skip
    coefficients = json.loads((tmp_path / "coefficients.json").read_text())
    for approach in ("isoflops", "derivative", "parametric"):
        assert coefficients[approach]["method"] == "corrected"
        assert coefficients[approach]["other_method"]["method"] == "authors"
    table = pd.read_csv(tmp_path / "predictions.csv")
    assert set(table["method"].dropna()) >= {"corrected", "authors"}
    assert len(table) == 2 * 7 * 3 + 7  # the recommendation, of the corrected method only
    params = {**default_params, "report": {"compare_authors": True, "targets": [
        {"name": "7B", "nnv": 7e9, "d_model": 4096}
    ]}}  # fmt: skip
    settings = validate_params(params)["report"]
    build_report(ReportInputs(tmp_path / "coefficients.json"), settings, tmp_path / "report")
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "## Both methods side by side" in markdown
    assert "| corrected V | interval | authors V | interval | paper V |" in markdown
