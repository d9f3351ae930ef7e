"""A fixed-memory latency histogram with log-spaced buckets (bounded relative error).

Written by hand because the percentile sketches on PyPI either grow with the data (t-digest
variants keep centroids per merge) or need NumPy; this is 200 integers per series and a
``bisect``. Buckets grow by ``2 ** (1/16)`` (4.4%) from 0.1 ms to ~10 minutes, so a
percentile read from it is within ~2.2% of the true value (the bucket's geometric middle).
"""

from __future__ import annotations

import bisect
import math

__all__ = ["LogHistogram"]

_GROWTH = 2 ** (1 / 16)
_FIRST = 0.1  # ms
_COUNT = 360  # up to 0.1 ms * 2 ** (360 / 16) ≈ 9.5 min; longer values go to an overflow bucket
_EDGES = [_FIRST * _GROWTH**i for i in range(_COUNT)]


class LogHistogram:
    """Counts of values (milliseconds) in log-spaced buckets; O(1) memory, O(log n) record."""

    __slots__ = ("count", "counts", "max", "min", "total")

    def __init__(self) -> None:
        self.counts = [0] * (_COUNT + 1)
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = 0.0

    def record(self, value_ms: float) -> None:
        """Add one value in milliseconds."""
        self.counts[bisect.bisect_left(_EDGES, value_ms)] += 1
        self.count += 1
        self.total += value_ms
        if value_ms < self.min:
            self.min = value_ms
        if value_ms > self.max:
            self.max = value_ms

    def percentile(self, q: float) -> float | None:
        """The ``q``-th percentile (0-100), or ``None`` when empty.

        Uses the nearest-rank definition, reports the geometric middle of the bucket that holds
        that rank, clamped to the observed min and max (exact at both ends).
        """
        if not self.count:
            return None
        rank = max(1, math.ceil(q / 100 * self.count))
        if rank == 1:
            return self.min
        if rank >= self.count:
            return self.max
        seen = 0
        for index, n in enumerate(self.counts):
            seen += n
            if seen >= rank:
                if index == 0:
                    value = self.min
                elif index >= _COUNT:
                    value = self.max
                else:
                    value = math.sqrt(_EDGES[index - 1] * _EDGES[index])
                return min(max(value, self.min), self.max)
        return self.max  # pragma: no cover - unreachable: ranks never exceed count

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    def merge(self, other: LogHistogram) -> None:
        """Add another histogram's counts to this one."""
        for i, n in enumerate(other.counts):
            if n:
                self.counts[i] += n
        self.count += other.count
        self.total += other.total
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
