"""f(V) = a ln(V)^2 + b ln(V) + c tokens per character, fitted to the measured token and
character counts of every tokenizer's training split."""

from __future__ import annotations

import logging
from typing import Any

from vocabscale.tokens_per_char import fit_tokens_per_char

log = logging.getLogger(__name__)


def fit_tokenization(token_stats: list[dict[str, Any]]) -> dict[str, Any]:
    """The fit to the stats.json of each token directory: a, b, c, the fit's quality and the
    measured points, by V."""
    points = []
    for stats in token_stats:
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
    log.info("f(V) = %.6g ln(V)^2 + %.6g ln(V) + %.6g", f.a, f.b, f.c)
    return {**f.as_dict(), **quality, "points": points}
