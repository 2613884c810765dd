"""Stages estimate_isoflops / estimate_derivative / estimate_parametric, and the user command
`vocabscale estimate` that runs all three on any runs table.

Each approach's JSON holds its coefficients, fit quality, the options it ran with and
`bootstrap`: the same fit repeated on runs resampled with replacement, from which the report
draws an interval for any target.
"""

from __future__ import annotations

import argparse
import copy
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from vocabscale.accounting import TokensPerChar, width_for_nnv
from vocabscale.config import DEFAULTS
from vocabscale.estimators import derivative, isoflops, parametric
from vocabscale.estimators.runs import RunsTable, RunsTableError, tokens_per_char_from_table
from vocabscale.fit_tokenization import fit_tokens_per_char, load_tokens_per_char
from vocabscale.io import write_csv, write_json
from vocabscale.predict import APPROACHES, bootstrap_interval, predict

log = logging.getLogger(__name__)

#: The coefficient keys a bootstrap replicate keeps (enough to predict).
REPLICATE_KEYS = {
    "isoflops": ("K1", "K2", "K3", "gamma", "nnv_exponent", "characters_exponent"),
    "derivative": ("gamma", "anchor"),
    "parametric": (*parametric.PARAMETERS, "beta"),
}

#: An explicit approach-2 anchor is given as anchor_nnv, anchor_vocab_size, anchor_d_model.
ANCHOR_KEYS = ("nnv", "vocab_size", "d_model")

#: Targets of the predictions table written by `vocabscale estimate`: the paper's.
DEFAULT_TARGETS = (2.87e9, 7e9, 13e9, 30e9, 70e9, 130e9, 300e9)


def options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """`vocabscale estimate`'s options: the estimate section of the defaults (the paper's
    choices) with what the command line gives; an option not given changes nothing."""
    options = copy.deepcopy(DEFAULTS["estimate"])
    overrides = {
        "isoflops": {
            "densify": False if args.no_densify else None,
            "free_exponents": True if args.free_exponents else None,
            "huber_delta": args.huber_delta,
        },
        "derivative": {
            "anchor_flops": args.derivative_anchor_flops,
            "grid_widths": args.derivative_grid_widths,
            "exponent_through_anchor": False if args.derivative_free_intercept else None,
            "nnv_grid": args.derivative_nnv_grid,
            "huber_delta": args.huber_delta,
        },
        "parametric": {
            "min_flops": args.min_flops,
            "huber_delta": args.huber_delta,
            "authors_tokenization": True if args.authors_tokenization else None,
        },
        "bootstrap": {"samples": args.bootstrap, "seed": args.seed, "confidence": args.confidence},
    }
    if args.derivative_anchor:
        nnv, vocab_size, d_model = args.derivative_anchor
        overrides["derivative"].update(
            anchor_nnv=nnv, anchor_vocab_size=vocab_size, anchor_d_model=int(d_model)
        )
    for section, values in overrides.items():
        options[section].update({k: v for k, v in values.items() if v is not None})
    return options


def fit_approach(
    approach: str, runs: RunsTable, f: TokensPerChar, options: dict[str, Any]
) -> dict[str, Any]:
    """One approach's fit with options as in params.yaml's `estimate.<approach>` section."""
    if approach == "isoflops":
        return isoflops.estimate_isoflops(runs, f, **options)
    if approach == "derivative":
        options = dict(options)
        anchor_keys = {key: options.pop(f"anchor_{key}", None) for key in ANCHOR_KEYS}
        explicit = None
        if any(value is not None for value in anchor_keys.values()):
            missing = [f"anchor_{key}" for key, value in anchor_keys.items() if value is None]
            if missing:
                raise ValueError(
                    f"estimate.derivative: an explicit anchor needs {', '.join(missing)} too"
                )
            explicit = anchor_keys
        return derivative.estimate_derivative(runs, f, anchor=explicit, **options)
    if approach == "parametric":
        return parametric.estimate_parametric(runs, f, **options)
    raise ValueError(f"unknown approach {approach!r}")


def replicate_of(approach: str, fitted: dict[str, Any]) -> dict[str, Any]:
    """The part of a refit that predictions need (the anchor without its loss table)."""
    replicate = {key: fitted[key] for key in REPLICATE_KEYS[approach]}
    if approach == "derivative":
        replicate["anchor"] = {k: v for k, v in fitted["anchor"].items() if k != "losses"}
    return replicate


def bootstrap_replicates(
    approach: str,
    runs: RunsTable,
    f: TokensPerChar,
    options: dict[str, Any],
    samples: int,
    seed: int,
) -> list[dict]:
    """Refit on `samples` resamples of whole runs (with replacement); failed refits are
    skipped and counted in the log."""
    rng = np.random.default_rng(seed)
    ids = runs.run_ids
    replicates, failures = [], 0
    logger = logging.getLogger("vocabscale")
    previous = logger.level
    logger.setLevel(logging.ERROR)  # refits repeat the main fit's warnings
    try:
        for _ in tqdm(range(samples), desc=f"bootstrap {approach}", mininterval=2, leave=False):
            sample = runs.subset(rng.choice(ids, size=len(ids), replace=True))
            try:
                fitted = fit_approach(approach, sample, f, options)
            except (RunsTableError, RuntimeError, ValueError, np.linalg.LinAlgError):
                failures += 1
                continue
            replicates.append(replicate_of(approach, fitted))
    finally:
        logger.setLevel(previous)
    if failures:
        log.warning(
            "bootstrap %s: %d of %d refits failed and were skipped", approach, failures, samples
        )
    return replicates


def resolve_tokenization(
    spec: str | None, runs_frame: pd.DataFrame, source: str
) -> tuple[TokensPerChar, dict[str, Any]]:
    """f(V) from `paper`, a fit.json, or (spec None) the table's own tokens and characters."""
    if spec is not None:
        f = load_tokens_per_char(spec)
        return f, {**f.as_dict(), "source": str(spec)}
    measured = tokens_per_char_from_table(runs_frame)
    if measured is None or len(measured[0]) < 3:
        raise RunsTableError(
            f"{source}: cannot fit f(V) from the table (it needs 'tokens' and 'characters' for at "
            "least 3 vocabulary sizes); pass --tokenization paper or --tokenization FIT.json"
        )
    f, quality = fit_tokens_per_char(*measured)
    return f, {**f.as_dict(), **quality, "source": f"fitted on {source}"}


def estimate_approach(
    approach: str,
    runs: RunsTable,
    f: TokensPerChar,
    options: dict[str, Any],
    bootstrap: dict[str, Any],
) -> dict[str, Any]:
    result = fit_approach(approach, runs, f, options)
    result["approach"] = approach
    result["excluded_rows"] = runs.excluded
    result["runs"] = len(runs.run_ids)
    result["bootstrap"] = bootstrap_replicates(
        approach, runs, f, options, bootstrap["samples"], bootstrap["seed"]
    )
    result["bootstrap_confidence"] = bootstrap.get("confidence", 0.9)
    return result


def predictions_table(
    coefficients: dict[str, Any], targets: list[dict[str, Any]], confidence: float = 0.9
) -> pd.DataFrame:
    """One row per target and approach: V, Nv, budget and bootstrap interval of V."""
    rows = []
    for target in targets:
        d_model = target.get("d_model") or width_for_nnv(target["nnv"])
        answer = predict(coefficients, target["nnv"], d_model, target.get("flops"))
        for approach, value in answer["approaches"].items():
            interval = bootstrap_interval(
                coefficients, approach, target["nnv"], d_model, answer["flops"], confidence
            )
            rows.append(
                {
                    "target": target.get("name", f"{target['nnv']:.3g}"),
                    "nnv": target["nnv"],
                    "d_model": d_model,
                    "approach": approach,
                    "flops": value["flops"],
                    "vocab_size": value["vocab_size"],
                    "vocab_params": value["vocab_params"],
                    "vocab_size_low": interval[0] if interval else np.nan,
                    "vocab_size_high": interval[1] if interval else np.nan,
                    "at_search_bound": bool(value.get("at_search_bound", False)),
                }
            )
    return pd.DataFrame(rows)


def estimate_all(
    runs: RunsTable,
    f: TokensPerChar,
    tokenization: dict[str, Any],
    options: dict[str, Any],
    out_dir: str | Path,
    targets: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """`vocabscale estimate`: every approach, coefficients.json and predictions.csv in out_dir.
    An approach that cannot be fitted on this table is reported and left out."""
    out_dir = Path(out_dir)
    coefficients: dict[str, Any] = {"tokenization": tokenization}
    failures = {}
    for approach in APPROACHES:
        try:
            coefficients[approach] = estimate_approach(
                approach, runs, f, options[approach], options["bootstrap"]
            )
        except (RunsTableError, RuntimeError) as error:
            failures[approach] = str(error)
            log.error("%s: %s", approach, error)
    if len(failures) == len(APPROACHES):
        raise RunsTableError(
            "no approach could be fitted:\n" + "\n".join(f"  {a}: {e}" for a, e in failures.items())
        )
    if failures:
        coefficients["failed"] = failures
    targets = targets or [{"name": f"{n:.3g}", "nnv": n} for n in DEFAULT_TARGETS]
    table = predictions_table(coefficients, targets, options["bootstrap"].get("confidence", 0.9))
    write_json(out_dir / "coefficients.json", coefficients)
    write_csv(out_dir / "predictions.csv", table)
    return coefficients
