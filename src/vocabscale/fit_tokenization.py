"""Stage fit_tokenization: f(V) = a ln(V)^2 + b ln(V) + c tokens per character, from the
measured token and character counts of every tokenizer's training split."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import statsmodels.api as sm

from vocabscale.accounting import PAPER_TOKENS_PER_CHAR, TokensPerChar
from vocabscale.io import read_json, write_json

log = logging.getLogger(__name__)


def fit_tokens_per_char(vocab_sizes, tokens_per_char) -> tuple[TokensPerChar, dict[str, Any]]:
    """Least-squares fit of f(V) in ln V. With fewer than three vocabularies the quadratic (and
    then the linear) term is dropped, and the output says so."""
    log_v = np.log(np.asarray(vocab_sizes, dtype=float))
    y = np.asarray(tokens_per_char, dtype=float)
    degree = min(2, len(np.unique(log_v)) - 1)
    if degree < 2:
        log.warning("only %d vocabulary sizes: f(V) is fitted with degree %d", len(y), degree)
    design = np.vander(log_v, degree + 1)  # columns ln V^degree ... 1
    fit = sm.OLS(y, design).fit()
    coefficients = np.zeros(3)
    coefficients[3 - (degree + 1) :] = fit.params
    f = TokensPerChar(*map(float, coefficients))
    residual = y - f(np.exp(log_v))
    total = np.sum((y - y.mean()) ** 2)
    quality = {
        "degree": degree,
        "r_squared": float(1 - np.sum(residual**2) / total) if total > 0 else 1.0,
        "max_abs_residual": float(np.max(np.abs(residual))),
    }
    return f, quality


def fit_tokenization(stats_paths: list[str | Path], out: str | Path) -> dict[str, Any]:
    points = []
    for path in stats_paths:
        stats = read_json(path)
        train = stats["splits"]["train"]
        points.append(
            {
                "vocab_size": stats["vocab_size"],
                "tokens": train["tokens"],
                "characters": train["characters"],
                "tokens_per_character": stats["tokens_per_character"],
            }
        )
    points.sort(key=lambda point: point["vocab_size"])
    f, quality = fit_tokens_per_char(
        [p["vocab_size"] for p in points], [p["tokens_per_character"] for p in points]
    )
    result = {**f.as_dict(), **quality, "points": points}
    write_json(out, result)
    log.info("f(V) = %.6g ln(V)^2 + %.6g ln(V) + %.6g", f.a, f.b, f.c)
    return result


def load_tokens_per_char(path_or_name: str | Path) -> TokensPerChar:
    """`paper` for the published SlimPajama fit, else a fit.json written by this stage."""
    if str(path_or_name) == "paper":
        return PAPER_TOKENS_PER_CHAR
    data = read_json(path_or_name)
    return TokensPerChar(data["a"], data["b"], data["c"])
