"""Stage report: the vocabulary size each approach recommends for each target, the evidence
behind it, and what to doubt.

Runs on any estimates directory (the three approaches' JSON files) or on one coefficients.json
from `vocabscale estimate`, so a report can be rebuilt from results pulled with DVC or fitted on
another team's runs table. The runs table, the tokenizers' f(V) measurements and the
downstream scores are optional: figures that need them are replaced by a sentence saying so.

Reading the inputs is `evidence`, what to doubt `doubts`, the figures `figures`, the formats
`render`. Outputs (written atomically as one directory): report.md and report.html (the same
content, the HTML self-contained with its images inline), figures/*.png, predictions.csv,
doubts.json, summary.json (flat numbers for `dvc metrics show`), isoflops_envelope.csv (the
envelope's points for `dvc plots show`) and coefficients.json (what the predictions came from,
usable with `vocabscale predict --coefficients`).
"""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path
from typing import Any

from vocabscale.config import add_params_argument, load_params
from vocabscale.io import atomic_dir, output_lock, to_json, write_csv, write_json
from vocabscale.report.doubts import find_doubts
from vocabscale.report.evidence import gather_evidence
from vocabscale.report.figures import draw_figures
from vocabscale.report.render import envelope_points, render_html, render_markdown, summary_metrics

log = logging.getLogger(__name__)


def build_report(
    estimates: str | Path,
    runs_path: str | Path | None,
    settings: dict[str, Any],
    out_dir: str | Path,
    tokenization: str | Path | None = None,
    downstream: str | Path | None = None,
) -> dict[str, Any]:
    """Write the report directory (`settings`: the validated `report` section); returns the
    predictions table, the doubts and which figures were drawn."""
    evidence = gather_evidence(estimates, runs_path, settings, tokenization, downstream)
    doubts = find_doubts(evidence)
    with atomic_dir(out_dir) as tmp:
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
        (tmp / "coefficients.json").write_text(to_json(evidence.coefficients))
    for doubt in doubts:
        log.warning("doubt: %s", re.sub(r"\*\*", "", doubt["message"]))
    return {"predictions": evidence.predictions, "doubts": doubts, "figures": figures}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_params_argument(parser)
    parser.add_argument(
        "--estimates", required=True, help="estimates directory, coefficients.json or `paper`"
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
    parser.add_argument("--out", required=True, help="the report directory to write")


def run(args: argparse.Namespace) -> None:
    settings = load_params(args.params)["report"]
    with output_lock(args.out):
        result = build_report(
            args.estimates, args.runs, settings, args.out, args.tokenization, args.downstream
        )
    print(
        f"wrote {Path(args.out) / 'report.md'} (and report.html): "
        f"{len(result['predictions'])} predictions, {len(result['doubts'])} warning(s)"
    )
