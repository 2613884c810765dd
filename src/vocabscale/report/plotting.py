"""What every figure of the report shares: colours per approach and per V, markers per model
shape, legends, plain log ticks, and saving."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.ticker import FuncFormatter

from vocabscale.estimate.approaches import APPROACHES
from vocabscale.estimate.predict import RECOMMENDED
from vocabscale.report.evidence import TRUE_TOKENS

FLOPS_LABEL = "training compute C = 6 (Nnv + V d) D  [FLOPs]"
DPI = 130


def colour(name: str) -> str:
    """One colour per approach, in registry order (the true-token variant of approach 3 in
    olive beside its green)."""
    if name == TRUE_TOKENS:
        return "tab:olive"
    if name == RECOMMENDED:
        return "black"
    return f"C{list(APPROACHES).index(name)}"


def vocab_colours(vocab_sizes) -> dict[float, Any]:
    """One colour per vocabulary size of the sweep, the same in every figure."""
    values = sorted({float(v) for v in vocab_sizes})
    cmap = plt.get_cmap("viridis")
    positions = np.linspace(0.0, 0.92, len(values)) if len(values) > 1 else [0.4]
    return {v: cmap(p) for v, p in zip(values, positions)}


def model_markers(nnv_values) -> dict[float, str]:
    """One marker per model shape (by Nnv), so runs of one size can be told apart."""
    shapes = "os^Dv<>pPXh*"
    values = sorted({float(n) for n in nnv_values})
    return {n: shapes[i % len(shapes)] for i, n in enumerate(values)}


def vocab_norm(values) -> LogNorm:
    values = np.asarray(values, float)
    low, high = float(values.min()), float(values.max())
    return LogNorm(low, high if high > low else low * 1.01)


def legend_outside(ax, **kwargs) -> None:
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False, **kwargs)


def legend_below(ax, ncol: int = 2) -> None:
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=8, frameon=False, ncol=ncol)


def plain_log_ticks(axis, minor_labels: bool = True) -> None:
    """Plain numbers on a log axis (2,560, not 2.56 x 10^3); minor ticks labelled at 2 and 5
    only, so that labels never run into each other."""
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
    axis.set_minor_formatter(
        FuncFormatter(lambda v, _: f"{v:,.0f}" if minor_labels and f"{v:.0e}"[0] in "25" else "")
    )


def save(fig, path: Path) -> None:
    fig.savefig(path, dpi=DPI, bbox_inches="tight")  # legends outside the axes stay whole
    plt.close(fig)
