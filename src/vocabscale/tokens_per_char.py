"""f(V): tokens per character of a tokenizer with V entries, f(V) = a ln(V)^2 + b ln(V) + c.

Every conversion between characters H and tokens D = H f(V) goes through it: the estimators,
the derivative approach (which rests on f alone) and the report. The paper fitted it on
SlimPajama; the pipeline fits its own on the tokenizers' measured counts (`fit-tokenization`).

f is evaluated with V clamped at 200,000 (the paper's convention), or at the vertex of the
quadratic when that lies lower: a larger vocabulary never makes text longer, so f must not rise
again where a quadratic fitted on the measured V turns upwards.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vocabscale.io import read_json

log = logging.getLogger(__name__)

#: f(V) is evaluated with V clamped here at most (the paper's convention).
TOKENS_PER_CHAR_MAX_VOCAB = 200_000


@dataclass(frozen=True)
class TokensPerChar:
    """f(V) = a ln(V)^2 + b ln(V) + c tokens per character, V clamped at `max_vocab`."""

    a: float
    b: float
    c: float

    @property
    def vertex(self) -> float | None:
        """The V where the quadratic in ln V is least (None when it opens downwards or is a
        line)."""
        if self.a <= 0:
            return None
        return math.exp(min(-self.b / (2 * self.a), 700.0))

    @property
    def max_vocab(self) -> float:
        """V beyond which f is constant: 200,000, or the vertex when it lies below."""
        vertex = self.vertex
        return float(min(TOKENS_PER_CHAR_MAX_VOCAB, vertex if vertex else math.inf))

    @property
    def clamped_at_vertex(self) -> bool:
        return self.max_vocab < TOKENS_PER_CHAR_MAX_VOCAB

    def __call__(self, vocab_size):
        log_v = np.log(np.minimum(vocab_size, self.max_vocab))
        return self.a * log_v**2 + self.b * log_v + self.c

    def derivative(self, vocab_size):
        """df/dV (zero beyond the clamp)."""
        v = np.asarray(vocab_size, dtype=float)
        slope = (2 * self.a * np.log(v) + self.b) / v
        return np.where(v < self.max_vocab, slope, 0.0)

    def as_dict(self) -> dict[str, float]:
        return {"a": self.a, "b": self.b, "c": self.c}


#: The paper's fit on SlimPajama.
PAPER_TOKENS_PER_CHAR = TokensPerChar(a=0.00639222, b=-0.15811069, c=1.20470122)


@dataclass(frozen=True)
class TokensPerCharFit:
    """f(V) with the covariance of (a, b, c) when it was fitted with residual degrees of
    freedom to spare (None for the paper's f or an exact fit): the uncertainty of f that the
    derivative approach's bootstrap draws from."""

    f: TokensPerChar
    covariance: np.ndarray | None = None

    def draw(self, rng: np.random.Generator) -> TokensPerChar:
        """One f drawn from the fit's sampling distribution (f itself without a covariance)."""
        if self.covariance is None:
            return self.f
        a, b, c = rng.multivariate_normal([self.f.a, self.f.b, self.f.c], self.covariance)
        return TokensPerChar(float(a), float(b), float(c))


def _polyfit(log_v: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, int]:
    """(a, b, c), their covariance (None without residual degrees of freedom) and the degree
    used: 2, or less when fewer vocabularies were measured."""
    degree = min(2, len(np.unique(log_v)) - 1)
    coefficients, covariance = np.zeros(3), None
    if len(y) > degree + 1:
        params, cov = np.polyfit(log_v, y, degree, cov=True)
        covariance = np.zeros((3, 3))
        covariance[2 - degree :, 2 - degree :] = cov
    else:
        params = np.polyfit(log_v, y, degree)
    coefficients[2 - degree :] = params
    return coefficients, covariance, degree


def fit_tokens_per_char(vocab_sizes, tokens_per_char) -> tuple[TokensPerChar, dict[str, Any]]:
    """Least-squares fit of f(V) in ln V. With fewer than three vocabularies the quadratic (and
    then the linear) term is dropped, and the output says so. `covariance` (of a, b, c) is
    given when there are more points than coefficients."""
    log_v = np.log(np.asarray(vocab_sizes, dtype=float))
    y = np.asarray(tokens_per_char, dtype=float)
    coefficients, covariance, degree = _polyfit(log_v, y)
    if degree < 2:
        log.warning("only %d vocabulary sizes: f(V) is fitted with degree %d", len(y), degree)
    f = TokensPerChar(*map(float, coefficients))
    residual = y - f(np.exp(log_v))
    total = np.sum((y - y.mean()) ** 2)
    quality = {
        "degree": degree,
        "r_squared": float(1 - np.sum(residual**2) / total) if total > 0 else 1.0,
        "max_abs_residual": float(np.max(np.abs(residual))),
        "covariance": None if covariance is None else covariance.tolist(),
    }
    if f.clamped_at_vertex:
        log.warning(
            "the fitted f(V) has its minimum at V = %.0f, below %d: f is held constant beyond it",
            f.max_vocab,
            TOKENS_PER_CHAR_MAX_VOCAB,
        )
    return f, quality


def load_tokens_per_char_fit(path_or_name: str | Path) -> TokensPerCharFit:
    """`paper` for the published SlimPajama fit (no covariance), else a fit.json of
    `fit-tokenization`: f(V) with its covariance, from the measured points (the same least
    squares that gave its a, b, c)."""
    if str(path_or_name) == "paper":
        return TokensPerCharFit(PAPER_TOKENS_PER_CHAR)
    data = read_json(path_or_name)
    f = TokensPerChar(data["a"], data["b"], data["c"])
    points = data.get("points") or []
    if not points:
        return TokensPerCharFit(f)
    log_v = np.log([float(p["vocab_size"]) for p in points])
    _, covariance, _ = _polyfit(log_v, np.array([p["tokens_per_character"] for p in points]))
    return TokensPerCharFit(f, covariance)
