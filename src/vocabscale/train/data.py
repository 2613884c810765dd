"""A run's data: the token arrays of one tokenizer, the batches drawn from them for training,
and the windows the evaluation text is cut into."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vocabscale.io import read_json, read_tokens


@dataclass(frozen=True)
class RunData:
    """The tokenize stage's output for one V: the training array (memory-mapped), the
    evaluation array (in memory) and the stats (token and character counts)."""

    stats: dict[str, Any]
    train: np.ndarray
    validation: np.ndarray

    @property
    def vocab_size(self) -> int:
        return int(self.stats["vocab_size"])

    @property
    def characters_per_token(self) -> float:
        """Characters per training token: converts a run's tokens into its characters H."""
        train = self.stats["splits"]["train"]
        return train["characters"] / train["tokens"]

    @classmethod
    def load(cls, tokens_dir: str | Path, context: int) -> RunData:
        """Read a token directory; refuse one too short for a single training window."""
        tokens_dir = Path(tokens_dir)
        stats = read_json(tokens_dir / "stats.json")
        vocab_size = int(stats["vocab_size"])
        train = read_tokens(tokens_dir / "train.bin", vocab_size)
        validation = np.asarray(read_tokens(tokens_dir / "validation.bin", vocab_size))
        if len(train) <= context + 1:
            raise ValueError(
                f"{tokens_dir}/train.bin has {len(train)} tokens, fewer than "
                f"train.context + 2 = {context + 2}"
            )
        return cls(stats, train, validation)


def sample_batch(
    tokens: np.ndarray,
    seed: int,
    step: int,
    sequences: int,
    context: int,
    rank: int = 0,
    world: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Process `rank`'s rows of the global batch of `step`: `sequences` random windows of
    context + 1 tokens, a pure function of (seed, step); rank r of `world` takes the r-th of
    `world` equal contiguous slices."""
    rng = np.random.default_rng([seed, step])
    starts = rng.integers(0, len(tokens) - context - 1, size=sequences)
    share = sequences // world
    mine = starts[rank * share : (rank + 1) * share]
    windows = np.stack([tokens[s : s + context + 1] for s in mine]).astype(np.int64)
    batch = torch.from_numpy(windows)
    return batch[:, :-1], batch[:, 1:]


def eval_windows(n_tokens: int, context: int) -> list[tuple[int, int]]:
    """Windows (start, length) of at most context + 1 tokens overlapping by one token, so that
    every token after the first is a target exactly once."""
    return [
        (start, min(context + 1, n_tokens - start)) for start in range(0, n_tokens - 1, context)
    ]


def eval_batches(n_tokens: int, context: int, batch_size: int) -> list[tuple[int, list[int]]]:
    """The evaluation windows as batches (length, starts): windows of one length together, in
    a fixed order that does not depend on the number of processes."""
    by_length: dict[int, list[int]] = {}
    for start, length in eval_windows(n_tokens, context):
        by_length.setdefault(length, []).append(start)
    return [
        (length, starts[first : first + batch_size])
        for length, starts in sorted(by_length.items())
        for first in range(0, len(starts), batch_size)
    ]
