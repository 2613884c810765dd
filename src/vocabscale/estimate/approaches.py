"""The three approaches of Tao et al. 2024, registered in one place.

Each approach declares its name (the key in params' `estimate` section, in coefficients.json
and in every table), the title the report gives it, its fit, its prediction and the options
`vocabscale estimate` offers for it. Estimation, prediction, the report, the Snakefile and the
tests read this registry: a fourth approach is one more entry here (its coefficients in
`results.COEFFICIENT_KEYS`, its section in the params schema).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from threadpoolctl import threadpool_limits

from vocabscale.config import defaults, describe
from vocabscale.estimate import derivative, isoflops, parametric
from vocabscale.estimate.anchor import ANCHOR_BUDGETS
from vocabscale.estimate.results import Answer, Fit
from vocabscale.runs.table import RunsTable
from vocabscale.tokens_per_char import TokensPerChar

#: (coefficients, nnv, d_model, requested budget or None, approach 1's optimal budget or None)
Predict = Callable[[dict[str, Any], float, float, float | None, float | None], Answer]
#: An approach prepared on a table's design: (L_u row for row, f, the main fit to start from
#: or None, full) -> the fit; `full` adds what the report shows beside the coefficients.
Fitter = Callable[..., Fit]


@dataclass(frozen=True)
class Option:
    """A `vocabscale estimate` flag that sets keys of the approach's params section. Its help
    text and default are the schema's; `value` makes it a switch that sets that value."""

    flag: str
    keys: tuple[str, ...]
    value: Any = None
    type: Callable[[str], Any] = float
    nargs: int | str | None = None
    choices: tuple[str, ...] | None = None
    metavar: str | tuple[str, ...] | None = None
    help: str | None = None
    casts: tuple[Callable[[Any], Any], ...] | None = None  # one per key, after parsing

    def add_to(self, parser: argparse.ArgumentParser, section: str) -> None:
        text = self.help or describe(f"{section}.{self.keys[0]}")
        if self.value is not None:
            parser.add_argument(self.flag, action="store_const", const=self.value, help=text)
        else:
            parser.add_argument(
                self.flag,
                type=self.type,
                nargs=self.nargs,
                choices=self.choices,
                metavar=self.metavar,
                help=text,
            )

    def values(self, given: Any) -> dict[str, Any]:
        """The keys this option sets from what the command line gave."""
        values = (given,) if len(self.keys) == 1 else tuple(given)
        casts = self.casts or (lambda value: value,) * len(self.keys)
        return {key: cast(value) for key, cast, value in zip(self.keys, casts, values, strict=True)}


@dataclass(frozen=True)
class Approach:
    name: str
    title: str
    fit: Callable[..., Fit]  # (runs, f, method=..., **options of estimate.<name>)
    fitter: Callable[..., Fitter]  # the same arguments: the approach prepared on the table
    predict: Predict
    options: tuple[Option, ...]
    #: Whether it answers for any budget (approach 3), or only the compute-optimal one.
    any_budget: bool = False
    #: Other approaches' sections of `estimate` its fit reads, each passed whole under its name
    #: (approach 2 fits approach 1's compute-optimal relation for its anchor's budget).
    reads: tuple[str, ...] = ()


APPROACHES: dict[str, Approach] = {
    approach.name: approach
    for approach in (
        Approach(
            name="isoflops",
            title="IsoFLOPs",
            fit=isoflops.estimate_isoflops,
            fitter=isoflops.IsoflopsFitter,
            predict=isoflops.predict,
            options=(
                Option("--no-densify", ("densify",), value=False, help="the plain envelope"),
                Option("--free-exponents", ("free_exponents",), value=True),
            ),
        ),
        Approach(
            name="derivative",
            title="Derivative",
            fit=derivative.estimate_derivative,
            fitter=derivative.DerivativeFitter,
            predict=derivative.predict,
            reads=("isoflops",),
            options=(
                Option("--derivative-anchor-flops", ("anchor_flops",)),
                Option(
                    "--derivative-anchor-budget",
                    ("anchor_budget",),
                    type=str,
                    choices=ANCHOR_BUDGETS,
                ),
                Option(
                    "--derivative-anchor",
                    ("anchor_nnv", "anchor_vocab_size", "anchor_d_model"),
                    nargs=3,
                    metavar=("NNV", "V", "D"),
                    casts=(float, float, int),
                    help="an explicit anchor instead of the runs' best V of the smallest model",
                ),
                Option(
                    "--derivative-anchor-method",
                    ("anchor_method",),
                    type=str,
                    choices=("vertex", "argmin"),
                ),
                Option(
                    "--derivative-grid-widths",
                    ("grid_widths",),
                    type=str,
                    choices=("runs", "paper"),
                ),
                Option("--derivative-nnv-grid", ("nnv_grid",), nargs="+", metavar="NNV"),
                Option(
                    "--derivative-free-intercept",
                    ("exponent_through_anchor",),
                    value=False,
                    help="fit gamma with a free intercept instead of through the anchor model",
                ),
            ),
        ),
        Approach(
            name="parametric",
            title="Parametric",
            fit=parametric.estimate_parametric,
            fitter=parametric.ParametricFitter,
            predict=parametric.predict,
            options=(
                Option("--min-flops", ("min_flops",)),
                Option("--authors-tokenization", ("authors_tokenization",), value=True),
            ),
            any_budget=True,
        ),
    )
}


def approach_options(section: dict[str, Any], name: str) -> dict[str, Any]:
    """The keyword arguments of one approach's fit from params' `estimate` section: its own
    section, the method, and the sections of other approaches it reads."""
    others = {other: section[other] for other in APPROACHES[name].reads}
    return {**section[name], "method": section["method"], **others}


def fit_approach(
    name: str, runs: RunsTable, f: TokensPerChar, options: dict[str, Any] | None = None
) -> Fit:
    """One approach's fit; `options` as in params.yaml's `estimate.<name>` section (plus
    `method`), any key left out taking the schema's default."""
    given = {**approach_options(defaults("estimate"), name), **(options or {})}
    with threadpool_limits(1):  # tiny linear algebra: BLAS threads only contend
        return APPROACHES[name].fit(runs, f, **given)
