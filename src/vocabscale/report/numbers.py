"""Numbers as the report writes them, in text and on figures."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def human(value: float) -> str:
    """1.23B, 85M, 500K: parameter counts as people say them."""
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def sci(value: float | None) -> str:
    """2.18e17: compute budgets."""
    if value is None or not np.isfinite(value):
        return "n/a"
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def times(factor: float) -> str:
    """12x, 1.5x, < 0.001x: how many times something is."""
    if not np.isfinite(factor):
        return "n/a"
    if factor < 0.001:
        return "< 0.001x"
    return f"{factor:,.0f}x" if factor >= 100 else f"{factor:.3g}x"


def range_text(low: float, high: float, scale: Callable[[float], str] = "{:,.0f}".format) -> str:
    """An interval, `n/a` when it has no finite ends."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return "n/a"
    return f"{scale(low)} – {scale(high)}"
