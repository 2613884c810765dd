"""The report's figures in report order: what each draws (its data, from `curves`; its
drawing, from `figures`), its title and caption, and the Markdown section that follows it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from vocabscale.report import curves, figures, fit_figures, sections
from vocabscale.report.evidence import Evidence, Skipped

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FigureSpec:
    name: str
    title: str
    data: Callable[[Evidence], Any]  # raises Skipped when the evidence lacks what it needs
    draw: Callable[[Any, Path], None]
    caption: str
    section: Callable[[Evidence], list[str]] | None = None  # Markdown under the figure
    inline: bool = False  # placed by a section of its own, not among the evidence


def figure_markdown(spec: FigureSpec, figures: dict[str, str | None]) -> list[str]:
    """The figure with its caption, or why it was not drawn."""
    if figures.get(spec.name) is None:
        return [f"![{spec.title}](figures/{spec.name}.png)", "", spec.caption, ""]
    return [f"*Not drawn: {figures[spec.name]}.*", ""]


FIGURES: tuple[FigureSpec, ...] = (
    FigureSpec(
        "backtest",
        "The backtest: predicted against the runs' best V",
        curves.backtest_points,
        figures.figure_backtest,
        "Each approach's predicted V (and the recommendation's) for runs its fit did not see, "
        "against those runs' own best V, with both intervals: on the diagonal a prediction "
        "is right; the dotted lines are a factor of 1.5 off.",
        inline=True,
    ),
    FigureSpec(
        "tokens_per_char",
        "Tokens per character f(V)",
        curves.tokens_per_char_curves,
        figures.figure_tokens_per_char,
        "The tokenizers' measured tokens per character (dots) and the quadratic-in-ln V fit the "
        "estimators used (solid where measured, dashed where extrapolated to the predicted V). "
        "Every conversion between characters and tokens, and the whole derivative approach, "
        "rests on this curve; the paper's SlimPajama fit is dotted for reference.",
    ),
    FigureSpec(
        "loss_vs_compute",
        "Every run: L_u against compute",
        curves.runs_data,
        figures.figure_loss_vs_compute,
        "One line per run through its evaluation checkpoints, coloured by vocabulary size. "
        "Runs excluded as diverged, if any, are red crosses.",
        section=sections.final_losses_markdown,
    ),
    FigureSpec(
        "isoflops_envelope",
        "Approach 1: the IsoFLOPs envelope",
        curves.envelope_data,
        fit_figures.figure_isoflops_envelope,
        "Walking up in compute, a point joins the envelope when its L_u beats every point "
        "before it. The envelope points (coloured by their V; squares and triangles are "
        "interpolated between runs) are the compute-optimal configurations the power laws "
        "are fitted on.",
    ),
    FigureSpec(
        "isoflops_power_laws",
        "Approach 1: power laws with intervals",
        curves.power_laws,
        fit_figures.figure_isoflops_power_laws,
        "Nnv, Nv and H of the envelope points against compute, the Huber-fitted power laws "
        "and the band the bootstrap refits span. The shaded region is beyond the largest "
        "compute fitted: the red stars (the targets) sit where the prediction is an "
        "extrapolation.",
        section=sections.derivative_markdown,
    ),
    FigureSpec(
        "parametric_fit",
        "Approach 3: predicted against observed loss",
        curves.parametric_fit_data,
        fit_figures.figure_parametric_fit,
        "Left: the fitted L_u(Nnv, Nv, D) against every checkpoint's L_u (hollow: below the fit's "
        "compute threshold). Right: residuals against compute; a trend or a fan here means "
        "the functional form does not fit these runs.",
    ),
    FigureSpec(
        "vocab_vs_nnv",
        "All approaches: Nv against Nnv",
        curves.vocab_curves,
        fit_figures.figure_vocab_vs_nnv,
        "Each approach's compute-optimal vocabulary parameters as Nnv grows (solid: fitted "
        "here; dashed: the paper's published coefficients), the sweep that was trained "
        "(grey squares), the targets' predictions, and what well-known public models chose "
        "(red stars, V in brackets).",
        section=sections.public_models_markdown,
    ),
    FigureSpec(
        "budget_multiple",
        "Approach 3: optimal V against the training budget",
        curves.budget_curves,
        fit_figures.figure_budget_multiple,
        "For each target, approach 3's optimal V when trained on a fraction or a multiple of "
        "the compute-optimal budget (1x = approach 1's optimum for its Nnv). More data per "
        "parameter favours a larger vocabulary. Hollow circles: the optimum hit the edge of "
        "the V search range.",
    ),
    FigureSpec(
        "downstream",
        "Downstream: accuracy against V",
        curves.downstream_data,
        figures.figure_downstream,
        "Each run scored by lm-evaluation-harness on each task, with one standard error. A "
        "line is one model shape: its runs have the same Nnv and were trained on the same "
        "tokens, so their compute differs only by the vocabulary's share, 6 V d D (its range "
        "in the legend). The markers along the top are each approach's predicted V for that "
        "model (approach 3 at its compute, approaches 1 and 2 at the compute-optimal budget of "
        "its Nnv), in the approach's colour and the model's marker.",
        section=sections.downstream_markdown,
    ),
)


def draw_figures(evidence: Evidence, directory: Path) -> dict[str, str | None]:
    """Draw every figure into `directory`; {name: None when drawn, else why it was skipped}."""
    outcome: dict[str, str | None] = {}
    for spec in FIGURES:
        try:
            spec.draw(spec.data(evidence), directory / f"{spec.name}.png")
            outcome[spec.name] = None
        except Skipped as reason:
            plt.close("all")
            outcome[spec.name] = str(reason)
    return outcome
