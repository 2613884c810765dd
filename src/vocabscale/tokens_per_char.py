"""f(V): tokens per character of a tokenizer with V entries, f(V) = a ln(V)^2 + b ln(V) + c.

Every conversion between characters H and tokens D = H f(V) goes through it: the estimators,
the derivative approach (which rests on f alone) and the report. The paper fitted it on
SlimPajama; the pipeline fits its own on the tokenizers' measured counts (`fit-tokenization`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import statsmodels.api as sm

from vocabscale.io import read_json

log = logging.getLogger(__name__)

#: f(V) is evaluated with V clamped here (the paper's convention).
TOKENS_PER_CHAR_MAX_VOCAB = 200_000


@dataclass(frozen=True)
class TokensPerChar:
    """f(V) = a ln(V)^2 + b ln(V) + c tokens per character, V clamped at 200,000."""

    a: float
    b: float
    c: float

    def __call__(self, vocab_size):
        log_v = np.log(np.minimum(vocab_size, TOKENS_PER_CHAR_MAX_VOCAB))
        return self.a * log_v**2 + self.b * log_v + self.c

    def derivative(self, vocab_size):
        """df/dV (zero beyond the clamp)."""
        v = np.asarray(vocab_size, dtype=float)
        slope = (2 * self.a * np.log(v) + self.b) / v
        return np.where(v < TOKENS_PER_CHAR_MAX_VOCAB, slope, 0.0)

    def as_dict(self) -> dict[str, float]:
        return {"a": self.a, "b": self.b, "c": self.c}


#: The paper's fit on SlimPajama.
PAPER_TOKENS_PER_CHAR = TokensPerChar(a=0.00639222, b=-0.15811069, c=1.20470122)


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


def load_tokens_per_char(path_or_name: str | Path) -> TokensPerChar:
    """`paper` for the published SlimPajama fit, else a fit.json of `fit-tokenization`."""
    if str(path_or_name) == "paper":
        return PAPER_TOKENS_PER_CHAR
    data = read_json(path_or_name)
    return TokensPerChar(data["a"], data["b"], data["c"])
