"""Stage report: the V each approach recommends for each target, the evidence behind it, and
what to doubt, written atomically as one directory (report.md, a self-contained report.html,
figures/, predictions.csv, doubts.json, summary.json for `dvc metrics`, isoflops_envelope.csv
for `dvc plots`, coefficients.json). It runs on an estimates directory or one coefficients.json,
so a report can be rebuilt from pulled results or another team's fit."""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path
from typing import Any

from vocabscale.config import add_params_argument, load_params
from vocabscale.io import atomic_dir, check_out_dir, output_lock, to_json, write_csv, write_json
from vocabscale.report.contents import draw_figures
from vocabscale.report.doubts import find_doubts
from vocabscale.report.evidence import ReportInputs, gather_evidence
from vocabscale.report.render import envelope_points, render_html, render_markdown, summary_metrics

log = logging.getLogger(__name__)


def build_report(
    inputs: ReportInputs, settings: dict[str, Any], out_dir: str | Path, force: bool = False
) -> dict[str, Any]:
    """Write the report directory (`settings`: the validated `report` section; `force`: replace
    an earlier report that holds files of others too); returns the predictions table, the
    doubts and which figures were drawn."""
    check_out_dir(out_dir, force)  # before any work
    evidence = gather_evidence(inputs, settings)
    doubts = find_doubts(evidence)
    with atomic_dir(out_dir, force) as tmp:
        (tmp / "figures").mkdir()
        figures = draw_figures(evidence, tmp / "figures")
        for name, reason in figures.items():
            if reason:
                log.warning("report: figure %s not drawn: %s", name, reason)
        markdown_text = render_markdown(evidence, doubts, figures)
        (tmp / "report.md").write_text(markdown_text)
        (tmp / "report.html").write_text(render_html(markdown_text, tmp / "figures"))
        write_csv(tmp / "predictions.csv", evidence.predictions)
        write_json(tmp / "doubts.json", doubts)
        write_json(tmp / "summary.json", summary_metrics(evidence, doubts))
        write_csv(tmp / "isoflops_envelope.csv", envelope_points(evidence))
        (tmp / "coefficients.json").write_text(to_json(evidence.estimates.to_json()))
    for doubt in doubts:
        log.warning("doubt: %s", re.sub(r"\*\*", "", doubt["message"]))
    return {"predictions": evidence.predictions, "doubts": doubts, "figures": figures}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_params_argument(parser)
    parser.add_argument(
        "--estimates", required=True, help="estimates directory, coefficients.json or `paper`"
    )
    parser.add_argument(
        "--backtest",
        help="the backtest's directory: its comparisons, and the recommendation's rule "
        "(without it the recommendation is the median of the approaches, said so)",
    )
    parser.add_argument("--runs", help="runs table (CSV); without it the runs' figures are skipped")
    parser.add_argument(
        "--tokenization",
        help="fit.json of fit-tokenization, for the measured points of the f(V) figure "
        "(default: read them from the runs table)",
    )
    parser.add_argument(
        "--downstream", help="downstream.csv of collect-downstream, for the downstream scores"
    )
    parser.add_argument(
        "--out",
        required=True,
        help="the report directory to write: new, empty, or an earlier report (replaced)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace an earlier report even when files were added to it (never a directory "
        "that is not a report)",
    )


def run(args: argparse.Namespace) -> None:
    settings = load_params(args.params)["report"]
    with output_lock(args.out):
        inputs = ReportInputs(
            args.estimates, args.runs, args.tokenization, args.downstream, args.backtest
        )
        result = build_report(inputs, settings, args.out, args.force)
    print(
        f"wrote {Path(args.out) / 'report.md'} (and report.html): "
        f"{len(result['predictions'])} predictions, {len(result['doubts'])} warning(s)"
    )
