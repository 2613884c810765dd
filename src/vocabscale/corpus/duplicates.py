"""Exact duplicates: a document's identity is a digest of its text, and `SeenDocuments` keeps
the digests of the documents kept so far, in memory, to drop every later copy."""

from __future__ import annotations

import bisect
import hashlib

import numpy as np


def document_digest(data: bytes) -> int:
    """A document's identity, from its UTF-8 bytes: the first 8 bytes of their BLAKE2b. Two
    different documents share one with odds of n^2 / 2^65 among n (0.05% at 10^8 documents)."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class SeenDocuments:
    """The digests of the documents kept so far, to drop exact repeats.

    Memory bounds it: 8 bytes per distinct document in a sorted numpy array, and the latest
    ones in a set (at most 1/16 of the array); merging them copies the array once. About 21
    bytes per document at peak (benchmarks/RESULTS.md): the price of an exact answer. A source
    too large for it is to be deduplicated upstream, or capped with max_characters.
    A lookup is a set lookup and a binary search (on Python ints, through a memoryview: numpy
    is slow on one value at a time); the set is merged into the array when full.
    """

    SMALLEST_MERGE = 1 << 16

    def __init__(self) -> None:
        self.merged = np.empty(0, dtype=np.uint64)
        self.view = memoryview(self.merged)
        self.latest: set[int] = set()
        self.merge_at = self.SMALLEST_MERGE

    def add(self, digest: int) -> bool:
        """Remember a document; False when it was seen before."""
        if digest in self.latest:
            return False
        view = self.view
        index = bisect.bisect_left(view, digest)
        if index < len(view) and view[index] == digest:
            return False
        self.latest.add(digest)
        if len(self.latest) >= self.merge_at:
            latest = np.sort(np.fromiter(self.latest, dtype=np.uint64, count=len(self.latest)))
            merged = np.concatenate([self.merged, latest])
            merged.sort(kind="stable")  # two sorted runs: timsort merges them in linear time
            self.merged, self.view, self.latest = merged, memoryview(merged), set()
            self.merge_at = max(self.SMALLEST_MERGE, len(self.merged) // 16)
        return True
