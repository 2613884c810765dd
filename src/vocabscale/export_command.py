"""`vocabscale export-hf`: a trained run as a Hugging Face model directory (`export`).

    vocabscale export-hf --run results/runs/m-v640 --out hf/m-v640

The run's tokenizer defaults to the one the pipeline trained it with.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vocabscale.export import export_run, run_tokenizer
from vocabscale.io import check_out_dir, output_lock


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="a run directory (results/runs/<run>)")
    parser.add_argument("--out", required=True, help="the Hugging Face directory to write")
    parser.add_argument(
        "--tokenizer",
        help="the run's tokenizer.json (default: the pipeline's, "
        "results/tokenizers/v<V>/tokenizer.json)",
    )
    parser.add_argument(
        "--force", action="store_true", help="replace an earlier export to --out with files added"
    )


def run(args: argparse.Namespace) -> None:
    run_dir = Path(args.run)
    tokenizer = Path(args.tokenizer) if args.tokenizer else run_tokenizer(run_dir)
    check_out_dir(args.out, args.force)  # before the weights are read
    with output_lock(args.out):
        out = export_run(run_dir, tokenizer, args.out, args.force)
    print(f"wrote {out}: AutoModelForCausalLM / AutoTokenizer.from_pretrained({str(out)!r})")
