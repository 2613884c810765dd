"""Loading a runs table for the estimators: renames, checks, exclusions, derived columns. The
table may come from this pipeline's `collect` stage or from any other training stack, so every
problem is reported with the file, the column and, where it applies, the line (what is checked:
docs/design.md, section 4)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from vocabscale.accounting import flops as paper_flops
from vocabscale.accounting import vocab_params as paper_vocab_params
from vocabscale.tokens_per_char import TokensPerChar

log = logging.getLogger(__name__)

DESIGN_COLUMNS = ("vocab_size", "d_model", "non_vocab_params", "characters", "flops")
REQUIRED_COLUMNS = (*DESIGN_COLUMNS, "loss_u")
#: What the estimators may fit (`estimate.target`): the unigram-normalized loss, or bits per
#: byte of the evaluation text (tokenizer-independent without a unigram model).
TARGETS = ("loss_u", "bpb")
NUMERIC_COLUMNS = (*REQUIRED_COLUMNS, "tokens", "vocab_params", "step")
RUN_KEY_FALLBACK = ("non_vocab_params", "vocab_size")
#: Columns that must be positive where given (a row with one that is not is excluded).
POSITIVE_COLUMNS = ("vocab_size", "d_model", "non_vocab_params", "characters", "flops")
POSITIVE_IF_GIVEN = ("tokens", "vocab_params")
#: How far `flops` may be from 6 (Nnv + V d) D (rounding in another stack's table).
FLOPS_TOLERANCE = 0.01
TRUE_WORDS, FALSE_WORDS = {"true", "t", "yes", "y"}, {"false", "f", "no", "n", ""}


class RunsTableError(ValueError):
    """The runs table cannot be used; the message names the file, column or line."""


@dataclass
class RunsTable:
    """The usable rows of a runs table plus what was left out and why."""

    frame: pd.DataFrame
    source: str
    excluded: dict[str, int] = field(default_factory=dict)

    @property
    def run_ids(self) -> np.ndarray:
        return self.frame["run"].unique()

    @functools.cached_property
    def _row_positions(self) -> dict[str, np.ndarray]:
        return self.frame.groupby("run", sort=False).indices

    def subset(self, runs) -> RunsTable:
        """The rows of the given runs, in the order given, each occurrence a distinct run (so a
        bootstrap resample with repeats keeps the repeats apart)."""
        positions = [self._row_positions[run] for run in runs]
        frame = self.frame.iloc[np.concatenate(positions)].reset_index(drop=True)
        labels = [f"{run}#{copy}" for copy, run in enumerate(runs)]
        frame["run"] = np.repeat(labels, [len(rows) for rows in positions])
        return RunsTable(frame, self.source, dict(self.excluded))


def diverged_mask(frame: pd.DataFrame, source: str = "runs table") -> pd.Series:
    """Rows whose `diverged` column says so: true, yes, 1 (also 1.0: a 0/1 column with a blank
    cell is read as floats) in any case; false, no, 0 or blank say not. Anything else is an
    error naming the line."""
    column = frame["diverged"]
    if column.dtype == bool:
        return column
    words = column.astype(str).str.strip().str.lower()
    numbers = pd.to_numeric(column, errors="coerce")
    true = words.isin(TRUE_WORDS) | (numbers == 1)
    false = words.isin(FALSE_WORDS) | (numbers == 0) | column.isna()
    bad = ~(true | false)
    if bad.any():
        row = bad[bad].index[0]
        raise RunsTableError(
            f"{source}: line {row + 2}, column diverged: {column[row]!r} is neither true nor "
            "false (true/false, yes/no, 1/0; blank for false)"
        )
    return true


def diverged_rows(frame: pd.DataFrame, source: str = "runs table") -> pd.DataFrame | None:
    """The rows excluded as diverged, flops and loss_u as numbers (None without the column)."""
    if "diverged" not in frame.columns:
        return None
    diverged = frame[diverged_mask(frame, source)].copy()
    for column in ("flops", "loss_u", *RUN_KEY_FALLBACK):
        diverged[column] = pd.to_numeric(diverged.get(column), errors="coerce")
    return diverged


def parse_renames(pairs: list[str] | None) -> dict[str, str]:
    """`THEIRS=OURS` pairs from the command line."""
    renames = {}
    for pair in pairs or []:
        theirs, sep, ours = pair.partition("=")
        if not sep or not theirs or not ours:
            raise RunsTableError(
                f"--column {pair!r}: expected THEIRS=OURS, e.g. nnv=non_vocab_params"
            )
        renames[theirs] = ours
    return renames


def lines_of(rows: pd.Series, most: int = 3) -> str:
    """The file lines of the rows where `rows` is true (row i is line i + 2: 1 is the header),
    the first few: `line 6`, `lines 6, 9, 11 and 4 more`."""
    lines = [str(row + 2) for row in rows[rows].index]
    more = f" and {len(lines) - most} more" if len(lines) > most else ""
    return f"line{'s' if len(lines) > 1 else ''} {', '.join(lines[:most])}{more}"


def numeric_columns(
    frame: pd.DataFrame, source: str, columns: tuple[str, ...] = NUMERIC_COLUMNS
) -> pd.DataFrame:
    """The table with its numeric columns as numbers; a cell that is not one is an error naming
    the first (and how many more)."""
    frame = frame.reset_index(drop=True)  # row i is line i + 2 of the file (1: the header)
    for column in dict.fromkeys(columns):
        if column not in frame.columns:
            continue
        converted = pd.to_numeric(frame[column], errors="coerce")
        bad = converted.isna() & frame[column].notna()
        if bad.any():
            row = bad[bad].index[0]
            others = bad.copy()
            others[row] = False
            also = f" (also {lines_of(others)})" if others.any() else ""
            raise RunsTableError(
                f"{source}: line {row + 2}, column {column}: {frame[column][row]!r} is not a "
                f"number{also}"
            )
        frame[column] = converted
    return frame


def blank_steps(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """A `step` column with every cell blank is no column: checkpoints are told apart by
    `flops`. Blank cells beside given steps are an error naming the lines (a checkpoint
    without its step cannot be told from another), but in diverged rows."""
    if "step" not in frame.columns:
        return frame
    blank = frame["step"].isna()
    if blank.all():
        return frame.drop(columns="step")
    if "diverged" in frame.columns:
        blank &= ~diverged_mask(frame, source)
    if blank.any():
        raise RunsTableError(
            f"{source}: {lines_of(blank)}, column step: blank where other rows give the step; "
            "give every checkpoint its step, or leave the column out (checkpoints are then told "
            "apart by flops)"
        )
    return frame


def run_labels(frame: pd.DataFrame) -> list[str]:
    """Which run each row belongs to: its run_id, else its (non_vocab_params, vocab_size)."""
    if "run_id" in frame.columns:
        return frame["run_id"].astype(str).tolist()
    return [f"nnv{n:.15g}-v{v:.15g}" for n, v in frame[list(RUN_KEY_FALLBACK)].to_numpy()]


def _which_run(frame: pd.DataFrame, row: int) -> str:
    if "run_id" in frame.columns:
        return f"run {frame.at[row, 'run_id']}"
    nnv, vocab_size = frame.loc[row, list(RUN_KEY_FALLBACK)]
    return (
        f"(non_vocab_params, vocab_size) = ({nnv:.15g}, {vocab_size:.15g}), which tells runs "
        "apart when there is no run_id column, so two runs may share it: add run_id"
    )


def drop_repeated_rows(frame: pd.DataFrame, source: str) -> tuple[pd.DataFrame, int]:
    """One row per checkpoint (`step`, else `flops`) of a run: exact copies of a row are
    dropped and counted; two different rows at one checkpoint, or one run at two widths, are an
    error naming the lines (without run_id, they are two runs that share a key)."""
    at = "step" if "step" in frame.columns else "flops"
    copies = frame.duplicated(keep="first")
    frame = frame[~copies]
    clash = frame.duplicated(["run", at], keep=False) & frame[at].notna()
    if clash.any():
        first = clash[clash].index[0]
        same = clash & (frame["run"] == frame.at[first, "run"]) & (frame[at] == frame.at[first, at])
        lines = " and ".join(str(row + 2) for row in same[same].index[:2])
        raise RunsTableError(
            f"{source}: lines {lines} are two different rows at {at} {frame.at[first, at]:.15g} "
            f"of {_which_run(frame, first)}"
        )
    widths = frame.groupby("run", sort=False)["d_model"].transform("nunique")
    if (widths > 1).any():
        row = widths[widths > 1].index[0]
        found = sorted(frame.loc[frame["run"] == frame.at[row, "run"], "d_model"].unique())
        raise RunsTableError(
            f"{source}: line {row + 2}: d_model {', '.join(f'{d:g}' for d in found)} in one run, "
            f"{_which_run(frame, row)}"
        )
    return frame, int(copies.sum())


def exclude_unusable(
    frame: pd.DataFrame, source: str, required: tuple[str, ...] = REQUIRED_COLUMNS
) -> tuple[pd.DataFrame, dict[str, int]]:
    """The rows the fits can use (`required` finite), and how many were left out, by reason."""
    excluded: dict[str, int] = {}
    if "diverged" in frame.columns:
        diverged = diverged_mask(frame, source)
        excluded["diverged"] = int(diverged.sum())
        frame = frame[~diverged]
    finite = np.isfinite(frame[list(required)].to_numpy(dtype=float)).all(axis=1)
    excluded["non_finite"] = int((~finite).sum())
    if not finite.all():
        log.warning(
            "%s: %s: blank, nan or inf in a required column (%s); left out",
            source,
            lines_of(pd.Series(~finite, index=frame.index)),
            ", ".join(required),
        )
    frame = frame[finite]
    given = [c for c in POSITIVE_IF_GIVEN if c in frame.columns]
    positive = (frame[list(POSITIVE_COLUMNS)] > 0).all(axis=1) & (
        (frame[given] > 0) | frame[given].isna()
    ).all(axis=1)
    excluded["non_positive"] = int((~positive).sum())
    return frame[positive].copy(), excluded


def check_compute(frame: pd.DataFrame, source: str) -> None:
    """`vocab_params` must be V d and `flops` 6 (Nnv + V d) D where the table gives them: the
    paper's conventions, which every fit and prediction here assumes."""
    nnv, vocab_size, d_model = (frame[c] for c in ("non_vocab_params", "vocab_size", "d_model"))
    checks = []
    if "vocab_params" in frame.columns:
        checks.append(("vocab_params", "V d", paper_vocab_params(vocab_size, d_model)))
    if "tokens" in frame.columns:
        expected = paper_flops(nnv, vocab_size, d_model, frame["tokens"])
        checks.append(("flops", "6 (Nnv + V d) D, D = tokens", expected))
    for column, formula, expected in checks:
        off = (frame[column] / expected - 1).abs() > FLOPS_TOLERANCE
        if off.any():
            row = off[off].index[0]
            raise RunsTableError(
                f"{source}: line {row + 2}, column {column}: {frame.at[row, column]:.6g} is not "
                f"{formula} = {expected[row]:.6g}, the paper's convention that every fit and "
                "prediction here is in (one V x d matrix, no attention); recompute the column"
            )


def prepare_runs(
    frame: pd.DataFrame,
    tokens_per_char: TokensPerChar | None,
    source: str = "runs table",
    target: str = "loss_u",
) -> RunsTable:
    """Check columns and values, drop repeated, diverged and non-finite rows (counted), derive
    `tokens` and `vocab_params` where absent, and assign every row to a run. The table must
    have the `target` the estimators fit (`estimate.target`; `target_table` puts it where they
    read it), and rows without it are excluded.

    A blank cell of an optional column means what the column's absence means: `tokens` is
    derived from `characters` with f(V), `vocab_params` is V d, `step` (when every cell is
    blank) is left to `flops`. In a required column it makes the row non-finite (pandas writes
    nan as a blank cell, so the two cannot be told apart): left out, counted and named."""
    required = (*DESIGN_COLUMNS, target)
    missing = [c for c in required if c not in frame.columns]
    if missing:
        what = f" (estimate.target is {target})" if target in missing and target != "loss_u" else ""
        raise RunsTableError(
            f"{source}: missing column(s) {', '.join(missing)}{what} "
            f"(has: {', '.join(map(str, frame.columns))}); rename yours with --column THEIRS=OURS"
        )
    frame = blank_steps(numeric_columns(frame, source, (*NUMERIC_COLUMNS, target)), source)
    frame["run"] = run_labels(frame)
    frame, repeated = drop_repeated_rows(frame, source)
    frame, excluded = exclude_unusable(frame, source, required)
    excluded["repeated"] = repeated
    dropped = {reason: n for reason, n in excluded.items() if n}
    if dropped:
        log.warning(
            "%s: excluded %s rows",
            source,
            ", ".join(f"{n} {reason.replace('_', '-')}" for reason, n in dropped.items()),
        )
    if frame.empty:
        raise RunsTableError(f"{source}: no usable rows left after exclusions {dropped}")
    check_compute(frame, source)
    if "tokens" not in frame.columns or frame["tokens"].isna().any():
        if tokens_per_char is None:
            raise RunsTableError(f"{source}: no 'tokens' column and no f(V) to derive it from")
        derived = frame["characters"] * tokens_per_char(frame["vocab_size"].to_numpy(float))
        frame["tokens"] = frame["tokens"].fillna(derived) if "tokens" in frame else derived
    v_d = paper_vocab_params(frame["vocab_size"], frame["d_model"])
    frame["vocab_params"] = frame.get("vocab_params", v_d).fillna(v_d)
    return RunsTable(frame.reset_index(drop=True), source, excluded)


def target_table(runs: RunsTable, target: str) -> RunsTable:
    """The table the estimators fit for `target`: its values in `loss_u`, the column every
    estimator reads (the measured L_u kept as `loss_u_measured`). A table without the column,
    or with a usable row where it is not a finite number (a positive one for bpb), is an error
    naming the file and the column."""
    if target not in TARGETS:
        raise ValueError(f"estimate.target must be one of {', '.join(TARGETS)}, not {target!r}")
    frame = runs.frame
    if target not in frame.columns:
        raise RunsTableError(
            f"{runs.source}: no column {target!r} to fit (estimate.target); the table has "
            f"{', '.join(map(str, frame.columns))}"
        )
    values = pd.to_numeric(frame[target], errors="coerce").to_numpy(float)
    bad = ~np.isfinite(values) | ((values <= 0) if target == "bpb" else False)
    if bad.any():
        row = frame[bad].iloc[0]
        raise RunsTableError(
            f"{runs.source}: column {target}: {int(bad.sum())} of {len(frame)} usable rows are "
            f"not {'positive ' if target == 'bpb' else ''}numbers (the first: run {row['run']}, "
            f"{row[target]!r})"
        )
    if target == "loss_u":
        return runs
    measured = frame["loss_u"] if "loss_u" in frame.columns else np.nan
    fitted = frame.assign(loss_u=values, loss_u_measured=measured)
    return RunsTable(fitted, runs.source, dict(runs.excluded))


def read_runs_csv(path: str | Path, renames: dict[str, str] | None = None) -> pd.DataFrame:
    """The raw table with the user's column renames applied."""
    path = Path(path)
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise RunsTableError(f"{path}: no such file") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise RunsTableError(f"{path}: not a readable CSV table ({error})") from None
    renames = renames or {}
    unknown = [theirs for theirs in renames if theirs not in frame.columns]
    if unknown:
        raise RunsTableError(f"{path}: --column names {', '.join(unknown)}, which the table lacks")
    return frame.rename(columns=renames)


def load_runs(
    path: str | Path,
    tokens_per_char: TokensPerChar | None,
    renames: dict[str, str] | None = None,
    target: str = "loss_u",
) -> RunsTable:
    return prepare_runs(read_runs_csv(path, renames), tokens_per_char, str(path), target)


def tokens_per_char_from_table(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray] | None:
    """(V, tokens per character) measured in a table that has both tokens and characters."""
    if "tokens" not in frame.columns:
        return None
    ratio = (frame["tokens"] / frame["characters"]).groupby(frame["vocab_size"]).median()
    return ratio.index.to_numpy(float), ratio.to_numpy(float)


def width_from_runs(frame: pd.DataFrame, source: str = "runs table") -> Callable[[float], float]:
    """d as a function of Nnv, learnt from the trained models: interpolated in log-log between
    them, and beyond them extended from the nearest model with the log-log slope of d over Nnv
    fitted on all models (an end segment alone can be flat, e.g. 85M and 151M share d = 768)."""
    models = frame.groupby("non_vocab_params")["d_model"].median().sort_index()
    if len(models) < 2:
        raise RunsTableError(
            f"{source}: widths for other model sizes cannot be learnt from a single trained "
            "model size; give the paper's width mapping instead"
        )
    log_nnv, log_d = np.log(models.index.to_numpy(float)), np.log(models.to_numpy(float))
    slope = float(np.polyfit(log_nnv, log_d, 1)[0])

    def width(nnv):
        x = np.log(nnv)
        inside = np.interp(x, log_nnv, log_d)
        below = log_d[0] + slope * (x - log_nnv[0])
        above = log_d[-1] + slope * (x - log_nnv[-1])
        return np.exp(np.where(x < log_nnv[0], below, np.where(x > log_nnv[-1], above, inside)))

    return width
