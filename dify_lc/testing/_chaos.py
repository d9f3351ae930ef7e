"""Seeded random faults and latencies: a channel with a given success rate and slow tail."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

from ._faults import Fault

__all__ = ["Chaos", "LogNormal"]


@dataclass(frozen=True, slots=True)
class LogNormal:
    """A latency distribution: lognormal with this median and shape, capped at ``cap`` seconds.

    ``sigma`` sets the tail: 0.3 is tight, 1.0 heavy (p99 ≈ 10× the median).
    """

    median: float
    sigma: float = 0.5
    cap: float | None = None

    def draw(self, rng: random.Random) -> float:
        value = rng.lognormvariate(math.log(self.median), self.sigma)
        return min(value, self.cap) if self.cap is not None else value


@dataclass(frozen=True, slots=True)
class Chaos:
    """What each generate request of a channel does, drawn from a seeded generator.

    ``faults`` lists ``(probability, Fault)``; the rest of the probability mass answers
    normally. ``first_token`` draws the time to the first token of every answer (and the
    delay before an error answer). Example — the official channel of the migration story::

        Chaos(
            faults=[(0.15, Fault.rate_limited()), (0.10, Fault.server_error(503)),
                    (0.08, Fault(hang=True)), (0.054, Fault(inband_error_after=0))],
            first_token=LogNormal(median=0.03, sigma=1.0),
        )
    """

    faults: Sequence[tuple[float, Fault]] = ()
    first_token: LogNormal | None = None

    def __post_init__(self) -> None:
        total = sum(p for p, _ in self.faults)
        if total > 1 + 1e-9 or any(p < 0 for p, _ in self.faults):
            raise ValueError("fault probabilities must be >= 0 and add up to at most 1")

    @property
    def success_rate(self) -> float:
        """The share of requests answered normally."""
        return 1.0 - sum(p for p, _ in self.faults)

    def draw(self, rng: random.Random) -> Fault:
        """The fault (or normal answer, ``Fault()``) for one request."""
        r = rng.random()
        edge = 0.0
        fault = Fault()
        for probability, candidate in self.faults:
            edge += probability
            if r < edge:
                fault = candidate
                break
        if self.first_token is not None and not fault.hang:
            wait = self.first_token.draw(rng)
            fault = (
                replace(fault, delay=wait)
                if fault.status
                else replace(fault, first_token_delay=wait)
            )
        return fault
