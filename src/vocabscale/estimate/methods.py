"""The two methods of `estimate.method`, and every choice that tells them apart, in one place:
`corrected` (vocabscale's) and `authors` (the authors' scripts step by step). The approaches
read these fields, never the method's name; docs/design.md, section 6, says why each differs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    name: str
    #: Approach 1 densifies in ln Nnv, ln H and ln V with widths learnt from the trained models;
    #: else in linear coordinates with the paper's width mapping.
    log_densification: bool
    #: Approach 1's power laws are the minimum of their Huber objective; else L-BFGS-B from a
    #: grid of starts, keeping the smallest relative mean squared error.
    huber_minimum: bool
    #: Approach 2's anchor is the paper's: the best swept V at 2.7e17 FLOPs, each run read by a
    #: quadratic spline in C (extrapolated), placed at Nnv = 33,000,000 exactly; else read
    #: linearly in ln C at the smallest model's compute-optimal budget (or `anchor_budget`).
    authors_anchor: bool
    #: Approach 2's gamma is the authors' script: dC/dV = 0 by fsolve from V = 1000 at the
    #: paper's seven rounded Nnv with the paper's widths, the line through the first by
    #: L-BFGS-B from 20 starts; else brentq at the trained models with `grid_widths`.
    authors_exponent: bool
    #: Approach 3 is fitted with D = H f(V / 1000), as the authors' code does.
    authors_tokenization: bool
    #: Approach 3 is fitted as the authors' script: exp-parametrized, L-BFGS-B from a grid of
    #: 486 starts, the smallest relative MSE with 0.1 < alpha2, beta < 1; else the Huber
    #: minimum from the best points of an exponent grid (estimate/authors.py).
    authors_loss_fit: bool


CORRECTED = Method(
    "corrected",
    log_densification=True,
    huber_minimum=True,
    authors_anchor=False,
    authors_exponent=False,
    authors_tokenization=False,
    authors_loss_fit=False,
)
AUTHORS = Method(
    "authors",
    log_densification=False,
    huber_minimum=False,
    authors_anchor=True,
    authors_exponent=True,
    authors_tokenization=True,
    authors_loss_fit=True,
)
METHODS: dict[str, Method] = {method.name: method for method in (CORRECTED, AUTHORS)}


def method_named(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        choices = ", ".join(METHODS)
        raise ValueError(f"estimate.method must be one of {choices}, not {name!r}") from None


def other_method(name: str) -> str:
    """The method a comparison (`report.compare_authors`) fits beside `name`."""
    return next(other for other in METHODS if other != name)
