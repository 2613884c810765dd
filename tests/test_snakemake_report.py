"""`snakemake --report report.zip` after a run: the archive holds every figure of the
prediction report with the report page, its tables and the downstream table, each with its
caption."""

from __future__ import annotations

import zipfile

import pytest
from conftest import run_in

from vocabscale.report.contents import FIGURES

pytestmark = pytest.mark.slow


def test_the_report_archive_holds_every_figure(local_workflow_run, tmp_path):
    archive = tmp_path / "report.zip"
    run_in(local_workflow_run, "snakemake", "--report", str(archive))
    names = zipfile.ZipFile(archive).namelist()
    drawn = [
        spec.name
        for spec in FIGURES
        if (local_workflow_run / f"results/report/figures/{spec.name}.png").exists()
    ]
    report = (local_workflow_run / "results/report/report.md").read_text()
    # a figure the runs cannot support (downstream is off; the tiny runs' approach 3 is
    # degenerate) is not drawn, and the report says why in its place
    assert len(drawn) + report.count("*Not drawn: ") == len(FIGURES)
    assert {"loss_vs_compute", "isoflops_envelope", "vocab_vs_nnv"} <= set(drawn)
    tables = ["report.html", "report.md", "predictions.csv", "downstream.csv"]
    for name in [*(f"{n}.png" for n in drawn), *tables]:
        assert any(entry.endswith(f"/{name}") for entry in names), name
    page = next(n for n in names if n.endswith("report/report.html"))
    index = zipfile.ZipFile(archive).read(page).decode()
    assert "Prediction report" in index and "Downstream evaluation" in index
