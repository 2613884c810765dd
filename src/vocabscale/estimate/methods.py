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
    #: quadratic spline in C (extrapolated); else read linearly in ln C at a budget every run
    #: of the smallest model reaches.
    authors_anchor: bool
    #: Approach 3 is fitted with D = H f(V / 1000), as the authors' code does.
    authors_tokenization: bool


CORRECTED = Method(
    "corrected",
    log_densification=True,
    huber_minimum=True,
    authors_anchor=False,
    authors_tokenization=False,
)
AUTHORS = Method(
    "authors",
    log_densification=False,
    huber_minimum=False,
    authors_anchor=True,
    authors_tokenization=True,
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
