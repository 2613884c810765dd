"""The published coefficients of Tao et al. 2024 (docs/design.md, "The paper's numbers"), in
the layout of a coefficients.json, so that `--coefficients paper` works wherever a fit does."""

from __future__ import annotations

from typing import Any

from vocabscale.tokens_per_char import PAPER_TOKENS_PER_CHAR

PAPER_COEFFICIENTS: dict[str, Any] = {
    "source": "published (Tao et al. 2024)",
    "isoflops": {
        "K1": -2.4846510161625193,
        "K2": -1.589031299255507,
        "K3": None,
        "gamma": 0.4163622634135234,
        "nnv_exponent": 0.5,
        "characters_exponent": 0.5,
    },
    "derivative": {
        "gamma": 0.8353974035228025,
        "anchor": {
            "nnv": 33e6,
            "vocab_size": 6144,
            "d_model": 512,
            "vocab_params": 3_145_728,
            "flops": 2.7e17,
        },
    },
    "parametric": {
        "A1": 1.8313851559554126,
        "A2": 0.19584238398665638,
        "B": 2.1241123120064955,
        "E": 5.5327846803337435,
        "alpha1": 0.44660634152009615,
        "alpha2": 0.6707374679896795,
        "beta": 0.44660634152009615,
    },
    "tokenization": PAPER_TOKENS_PER_CHAR.as_dict(),
}
