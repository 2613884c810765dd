"""`estimate.target`: the approaches fitted on bits per byte instead of L_u, each also fitted on
the other target, and the report's table of how far V moves between the two."""

import copy
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from vocabscale.config import defaults, validate_params
from vocabscale.estimate import parametric, synthetic
from vocabscale.estimate.fit import estimate_all
from vocabscale.estimate.published import PAPER_COEFFICIENTS
from vocabscale.io import write_json
from vocabscale.report.evidence import ReportInputs
from vocabscale.report.stage import build_report
from vocabscale.runs.table import RunsTableError, prepare_runs, target_table
from vocabscale.tokens_per_char import PAPER_TOKENS_PER_CHAR, TokensPerCharFit

F = PAPER_TOKENS_PER_CHAR
LAW = PAPER_COEFFICIENTS["parametric"]
#: bits per byte from a law whose vocabulary term is twice the L_u law's (a positive offset)
BPB_LAW = {**LAW, "A2": 2 * LAW["A2"]}
BPB_OFFSET = 5.0
VOCABULARIES = (4096, 8192, 16384, 32768, 65536)


def table(bpb_law=BPB_LAW) -> pd.DataFrame:
    frame = synthetic.runs_table(
        synthetic.parametric_law(LAW), synthetic.paper_models(4), VOCABULARIES, 8
    )
    nnv, nv = frame["non_vocab_params"], frame["vocab_params"]
    bpb = synthetic.parametric_law(bpb_law)(nnv, nv, frame["tokens"], frame["flops"])
    return frame.assign(bpb=bpb + BPB_OFFSET)


def section(**changes) -> dict:
    options = copy.deepcopy(defaults("estimate"))
    options["bootstrap"]["samples"] = 0
    options["parametric"]["min_flops"] = 1e17
    options.update(changes)
    return options


def test_the_target_column_is_what_the_estimators_read():
    runs = prepare_runs(table(), F, "runs.csv", target="bpb")
    fitted = target_table(runs, "bpb")
    np.testing.assert_array_equal(fitted.frame["loss_u"], runs.frame["bpb"])
    np.testing.assert_array_equal(fitted.frame["loss_u_measured"], runs.frame["loss_u"])
    assert target_table(runs, "loss_u") is runs
    with pytest.raises(RunsTableError, match=r"runs\.csv: no column 'bpb'"):
        target_table(prepare_runs(table().drop(columns="bpb"), F, "runs.csv"), "bpb")
    negative = table().assign(bpb=lambda t: t["bpb"] - 10)
    with pytest.raises(RunsTableError, match=r"column bpb: .* not positive numbers"):
        target_table(prepare_runs(negative, F, "runs.csv"), "bpb")
    with pytest.raises(RunsTableError, match=r"missing column\(s\) bpb \(estimate.target is bpb\)"):
        prepare_runs(table().drop(columns="bpb"), F, "runs.csv", target="bpb")


def test_rows_without_the_target_are_excluded_and_counted():
    frame = table()
    frame.loc[:2, "bpb"] = np.nan
    runs = prepare_runs(frame, F, target="bpb")
    assert runs.excluded["non_finite"] == 3 and len(runs.frame) == len(frame) - 3
    assert prepare_runs(frame, F).excluded["non_finite"] == 0  # fitting L_u, bpb is not needed


def test_bits_per_byte_is_fitted_and_the_other_target_beside_it():
    """On bpb, approach 3 recovers the bpb law (its A2 twice the L_u law's) and its V moves as
    that law's optimum does; the L_u fit of each approach is recorded beside it."""
    runs = prepare_runs(table(), F, target="bpb")
    estimates = estimate_all(runs, TokensPerCharFit(F), {}, section(target="bpb"))
    fit = estimates.fit("parametric")
    assert fit.detail("target") == "bpb"
    assert fit.coefficients["A2"] == pytest.approx(BPB_LAW["A2"], rel=0.05)
    assert fit.coefficients["E"] == pytest.approx(LAW["E"] - BPB_OFFSET, rel=0.01)
    other = fit.detail("other_target")
    assert other["target"] == "loss_u"
    assert other["A2"] == pytest.approx(LAW["A2"], rel=0.05)
    nnv, d_model, budget = 3.02e8, 1024, 1e20
    on_bpb = parametric.optimal_vocab(fit.coefficients, nnv, d_model, budget)[0]
    on_loss = parametric.optimal_vocab(other, nnv, d_model, budget)[0]
    truth = (
        parametric.optimal_vocab(BPB_LAW, nnv, d_model, budget)[0]
        / (parametric.optimal_vocab(LAW, nnv, d_model, budget)[0])
    )
    assert on_bpb / on_loss == pytest.approx(truth, rel=0.05) and truth > 1.5
    for approach in ("isoflops", "derivative"):
        assert estimates.fit(approach).detail("other_target")["target"] == "loss_u"


def test_a_table_without_bpb_records_why_and_still_fits_l_u():
    runs = prepare_runs(table().drop(columns="bpb"), F, "runs.csv")
    estimates = estimate_all(runs, TokensPerCharFit(F), {}, section())
    for result in estimates.approaches.values():
        assert result.fit.detail("target") == "loss_u"
        record = result.fit.detail("other_target")
        assert record["target"] == "bpb" and "no column 'bpb'" in record["error"]


def test_the_cli_fits_the_target_and_names_a_missing_column(tmp_path):
    path = tmp_path / "runs.csv"
    table().drop(columns="bpb").to_csv(path, index=False)
    command = [sys.executable, "-m", "vocabscale", "estimate", "--runs", str(path), "--out",
               str(tmp_path / "fits"), "--tokenization", "paper", "--bootstrap", "0",
               "--target", "bpb"]  # fmt: skip
    failed = subprocess.run(command, capture_output=True, text=True)
    assert failed.returncode != 0
    assert f"{path}: missing column(s) bpb" in failed.stderr
    table().to_csv(path, index=False)
    subprocess.run(command, capture_output=True, text=True, check=True)
    fitted = json.loads((tmp_path / "fits" / "coefficients.json").read_text())
    assert fitted["parametric"]["target"] == "bpb"
    assert fitted["parametric"]["other_target"]["target"] == "loss_u"


def test_the_report_says_how_far_v_moves(tmp_path, default_params):
    """bpb = L_u + 5 leaves every approach's V where it was (ratio 1); the report's table says
    so, per target and approach."""
    frame = table().assign(bpb=lambda t: t["loss_u"] + BPB_OFFSET)
    frame.to_csv(tmp_path / "runs.csv", index=False)
    estimates = estimate_all(prepare_runs(frame, F), TokensPerCharFit(F), {}, section())
    for name, result in estimates.approaches.items():
        result.tokenization = F.as_dict()
        write_json(tmp_path / "estimates" / f"{name}.json", result.to_json())
    params = copy.deepcopy(default_params)
    params["report"] = {"targets": [{"name": "302M", "nnv": 3.02e8, "d_model": 1024}]}
    out = tmp_path / "report"
    settings = validate_params(params)["report"]
    build_report(ReportInputs(tmp_path / "estimates", tmp_path / "runs.csv"), settings, out)
    markdown = (out / "report.md").read_text()
    assert "## V fitted on L_u and on bits per byte" in markdown
    rows = [line for line in markdown.splitlines() if line.startswith("| 302M |")]
    moved = [line for line in rows if line.endswith("| 1.000 |")]
    assert len(moved) == 3, rows
