"""`vocabscale predict`: V and Nv from each approach for one model, from a coefficients file,
an estimates directory or the published coefficients (`--coefficients paper`)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from vocabscale.estimate.predict import ModelPrediction, load_coefficients, predict
from vocabscale.io import read_json


def positive_number(text: str) -> float:
    """A command-line value that must be a finite number above 0 (argparse names the option
    when this raises)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, not {text}")
    return value


def positive_integer(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, not {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--nnv", type=positive_number, required=True, help="non-vocabulary parameters"
    )
    parser.add_argument(
        "--d-model", type=positive_integer, help="width (default: the paper's mapping)"
    )
    parser.add_argument("--flops", type=positive_number, help="budget (default: compute-optimal)")
    parser.add_argument(
        "--coefficients", required=True, help="paper, a coefficients.json or a directory"
    )
    parser.add_argument(
        "--backtest",
        help="a backtest directory (`vocabscale backtest`): the recommendation's rule "
        "(default: the one the coefficients carry, else the median of the approaches)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def as_text(prediction: ModelPrediction) -> str:
    lines = [
        f"Nnv = {prediction.nnv:.4g}, d = {prediction.d_model}, C = {prediction.flops:.4g} FLOPs"
    ]
    found = prediction.recommended
    if found is not None and found.vocab_size is not None:
        line = f"  {'recommended':<11} V = {found.vocab_size:>12,.0f}"
        if found.low == found.low:  # not NaN
            line += f"   interval {found.low:,.0f} - {found.high:,.0f}"
        if found.band is not None:
            line += f"   flat band {found.band[0]:,} - {found.band[1]:,}"
        lines += [line, f"  ({found.rule})"]
    elif found is not None:
        lines.append(f"  {'recommended':<11} no answer: {found.reason}")
    for approach, value in prediction.approaches.items():
        if value.vocab_size is None:
            lines.append(f"  {approach:<11} no answer: {value.reason}")
            continue
        answer, interval = value.answer, value.interval
        line = f"  {approach:<11} V = {answer.vocab_size:>12,.0f}   Nv = {answer.vocab_params:.4g}"
        if interval is not None and interval.available:
            line += f"   {value.confidence:.0%} interval {interval.low:,.0f} - {interval.high:,.0f}"
            if interval.excluded_share > 0:
                line += f" ({interval.excluded_share:.0%} of its refits left out)"
        lines.append(line)
    return "\n".join(lines)


def run(args: argparse.Namespace) -> None:
    coefficients = load_coefficients(args.coefficients)
    if args.backtest is not None:
        coefficients.backtest = read_json(Path(args.backtest) / "summary.json")
    prediction = predict(coefficients, args.nnv, args.d_model, args.flops, intervals=True)
    print(json.dumps(prediction.to_json()) if args.json else as_text(prediction))
