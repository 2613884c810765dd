"""Loading a runs table for the estimators: renames, checks, exclusions, derived columns.

The table may come from this pipeline's `collect` stage or from any other training stack, so
every problem is reported with the file, the column and, where it applies, the line.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from vocabscale.tokens_per_char import TokensPerChar

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("vocab_size", "d_model", "non_vocab_params", "characters", "flops", "loss_u")
NUMERIC_COLUMNS = (*REQUIRED_COLUMNS, "tokens", "vocab_params", "step")
RUN_KEY_FALLBACK = ("non_vocab_params", "vocab_size")


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


def diverged_mask(frame: pd.DataFrame) -> pd.Series:
    """Rows whose `diverged` column says so (true, 1 or yes, in any case)."""
    return frame["diverged"].astype(str).str.lower().isin(["true", "1", "yes"])


def diverged_rows(frame: pd.DataFrame) -> pd.DataFrame | None:
    """The rows excluded as diverged, flops and loss_u as numbers (None without the column)."""
    if "diverged" not in frame.columns:
        return None
    diverged = frame[diverged_mask(frame)].copy()
    for column in ("flops", "loss_u"):
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


def prepare_runs(
    frame: pd.DataFrame, tokens_per_char: TokensPerChar | None, source: str = "runs table"
) -> RunsTable:
    """Check columns and values, drop diverged and non-finite rows (counted), derive
    `tokens` and `vocab_params` where absent, and assign every row to a run."""
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise RunsTableError(
            f"{source}: missing column(s) {', '.join(missing)} "
            f"(has: {', '.join(map(str, frame.columns))}); rename yours with --column THEIRS=OURS"
        )
    frame = frame.copy()
    for column in NUMERIC_COLUMNS:
        if column not in frame.columns:
            continue
        converted = pd.to_numeric(frame[column], errors="coerce")
        bad = converted.isna() & frame[column].notna()
        if bad.any():
            line = int(np.flatnonzero(bad.to_numpy())[0]) + 2  # header is line 1
            raise RunsTableError(
                f"{source}: line {line}, column {column}: "
                f"{frame[column][bad].iloc[0]!r} is not a number"
            )
        frame[column] = converted
    excluded: dict[str, int] = {}
    if "diverged" in frame.columns:
        diverged = diverged_mask(frame)
        excluded["diverged"] = int(diverged.sum())
        frame = frame[~diverged]
    values = frame[list(REQUIRED_COLUMNS)].to_numpy(dtype=float)
    finite = np.isfinite(values).all(axis=1)
    excluded["non_finite"] = int((~finite).sum())
    frame = frame[finite]
    positive = (
        frame[["vocab_size", "d_model", "non_vocab_params", "characters", "flops"]] > 0
    ).all(axis=1)
    excluded["non_positive"] = int((~positive).sum())
    frame = frame[positive].copy()
    dropped = {reason: n for reason, n in excluded.items() if n}
    if dropped:
        log.warning(
            "%s: excluded %s rows",
            source,
            ", ".join(f"{n} {reason.replace('_', '-')}" for reason, n in dropped.items()),
        )
    if frame.empty:
        raise RunsTableError(f"{source}: no usable rows left after exclusions {dropped}")
    if "tokens" not in frame.columns or frame["tokens"].isna().any():
        if tokens_per_char is None:
            raise RunsTableError(f"{source}: no 'tokens' column and no f(V) to derive it from")
        derived = frame["characters"] * tokens_per_char(frame["vocab_size"].to_numpy(float))
        frame["tokens"] = frame["tokens"].fillna(derived) if "tokens" in frame else derived
    if "vocab_params" not in frame.columns:
        frame["vocab_params"] = frame["vocab_size"] * frame["d_model"]
    if "run_id" in frame.columns:
        frame["run"] = frame["run_id"].astype(str)
    else:
        frame["run"] = [
            f"nnv{n:.15g}-v{v:.15g}" for n, v in frame[list(RUN_KEY_FALLBACK)].to_numpy()
        ]
    return RunsTable(frame.reset_index(drop=True), source, excluded)


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
    path: str | Path, tokens_per_char: TokensPerChar | None, renames: dict[str, str] | None = None
) -> RunsTable:
    return prepare_runs(read_runs_csv(path, renames), tokens_per_char, str(path))


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
