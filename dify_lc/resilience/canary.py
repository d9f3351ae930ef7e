"""Sticky weighted routing: the same key always lands on the same route for given weights."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = ["bucket", "choose"]

_SCALE = float(1 << 64)


def bucket(key: str) -> float:
    """A stable position in ``[0, 1)`` for ``key`` (BLAKE2b, the same in every process and run).

    Python's ``hash()`` is salted per process, so it cannot make a user sticky across a fleet.
    """
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def choose(weights: Sequence[float], position: float) -> int | None:
    """The index of the weighted route that owns ``position``, or ``None`` for the default.

    Weighted routes own consecutive slices of ``[0, 1)`` from 0 upward, in order; the rest
    belongs to the default (primary) route. So raising a route's weight only moves keys onto
    that route (ramping 5% → 20% → 50% → 100% never moves a user back), and a key's route
    changes only when a weight changes.
    """
    edge = 0.0
    for index, weight in enumerate(weights):
        edge += weight
        if position < edge:
            return index
    return None
