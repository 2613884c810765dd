"""A run's data: the token arrays of one tokenizer, the order in which training reads them
(each window once per epoch) and the windows the evaluation text is cut into."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vocabscale.io import TOKEN_SPLITS, read_json, read_tokens


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

    @property
    def content_digest(self) -> dict[str, str]:
        """sha256 of each token array, as the tokenize stage recorded it."""
        return {split: self.stats["splits"][split]["sha256"] for split in TOKEN_SPLITS}

    @classmethod
    def load(cls, tokens_dir: str | Path, context: int) -> RunData:
        """Read a token directory; refuse one too short for a single training window, or one
        whose stats do not say what the arrays hold."""
        tokens_dir = Path(tokens_dir)
        stats = read_json(tokens_dir / "stats.json")
        if any("sha256" not in stats["splits"][split] for split in TOKEN_SPLITS):
            raise ValueError(
                f"{tokens_dir}/stats.json records no content digest of the token arrays (an "
                f"older vocabscale wrote it): delete {tokens_dir} and run the tokenize stage again"
            )
        vocab_size = int(stats["vocab_size"])
        train = read_tokens(tokens_dir / "train.bin", vocab_size)
        validation = np.asarray(read_tokens(tokens_dir / "validation.bin", vocab_size))
        if len(train) <= context + 1:
            raise ValueError(
                f"{tokens_dir}/train.bin has {len(train)} tokens, fewer than "
                f"train.context + 2 = {context + 2}"
            )
        return cls(stats, train, validation)


class WindowOrder:
    """The order in which a run reads its training windows: the windows of `context` + 1
    tokens at a stride of `context` (every token after the first is a target exactly once per
    epoch), in a seeded permutation per epoch, read without replacement; after the last window
    of an epoch comes the first of the next epoch's new permutation.

    Window i of the stream is a pure function of (seed, i), so a resumed run reads exactly what
    an uninterrupted one would. One epoch's permutation is held at a time (4 bytes a window).
    """

    def __init__(self, n_tokens: int, context: int, seed: int) -> None:
        self.windows = (n_tokens - 1) // context
        self.context, self.seed = context, seed
        self._epoch, self._permutation = -1, np.empty(0, dtype=np.int64)

    def permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            dtype = np.uint32 if self.windows < 2**32 else np.int64
            self._permutation = np.arange(self.windows, dtype=dtype)
            np.random.default_rng([self.seed, epoch]).shuffle(self._permutation)
            self._epoch = epoch
        return self._permutation

    def starts(self, first: int, count: int) -> np.ndarray:
        """Start positions (in tokens) of windows first .. first + count - 1 of the stream."""
        parts = []
        while count > 0:
            epoch, position = divmod(first, self.windows)
            take = min(count, self.windows - position)
            parts.append(self.permutation(epoch)[position : position + take])
            first, count = first + take, count - take
        return np.concatenate(parts).astype(np.int64) * self.context

    def epochs(self, windows_read: int) -> float:
        """Passes over the training tokens that reading this many windows makes."""
        return windows_read / self.windows


def training_batch(
    tokens: np.ndarray,
    order: WindowOrder,
    step: int,
    sequences: int,
    rank: int = 0,
    world: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Process `rank`'s rows of the global batch of `step`: windows step x sequences onwards
    of `order`; rank r of `world` takes the r-th of `world` equal contiguous slices."""
    share = sequences // world
    starts = order.starts(step * sequences + rank * share, share)
    length = order.context + 1
    windows = np.stack([tokens[s : s + length] for s in starts]).astype(np.int64)
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
