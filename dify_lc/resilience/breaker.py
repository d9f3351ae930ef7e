"""Circuit breaker per backend: pybreaker holds the state, we decide when it changes.

pybreaker's ``CircuitBreaker`` keeps the state and its storage (memory, or
``CircuitRedisStorage`` so many processes share one view) and fires its listeners. We never
call ``breaker.call()`` around network I/O: it holds one lock for the whole call (8 threads ×
0.1 s through one breaker take 0.8 s) and it does not understand coroutines or async generators
(their failures count as successes). This adapter is told the outcome explicitly and takes its
lock only for the few lines that change counters and state.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import pybreaker

from dify_lc.errors import DifyLCError
from dify_lc.observability.log import emit
from dify_lc.resilience.shared import (
    DEFAULT_PROBE_TTL,
    LOCAL,
    SharedStorage,
    claim_probe,
    release_probe,
)

__all__ = ["Breaker", "BreakerPolicy", "Permit"]

CLOSED, OPEN, HALF_OPEN = pybreaker.STATE_CLOSED, pybreaker.STATE_OPEN, pybreaker.STATE_HALF_OPEN
_OK, _FAILED, _SLOW = 0, 1, 2


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """When a backend's breaker opens and how it recovers.

    Opens on ``fail_max`` consecutive failures, or when, over the last ``window`` calls (once
    at least ``min_calls`` are in it), the share of failures reaches ``failure_rate`` or the
    share of slow calls (successes slower than ``slow_call_duration`` seconds) reaches
    ``slow_call_rate``. The migration story's outage — 61% success, 28 s answers — trips the
    rate rules long before consecutive counting would.

    After ``reset_timeout`` seconds open, the breaker is half-open: up to ``half_open_probes``
    calls go through, the rest are rejected at once; a probe's success closes it, a failure
    re-opens it.

    Slow start: until the backend has proven itself — ``min_calls`` outcomes in the window
    with failure and slow-call rates below their thresholds — at most ``cold_start_limit``
    calls (default ``fail_max``) are in flight to it, and the rest are rejected at once (they
    go to the next route). This holds at start and again after every recovery. Without it, a
    backend that hangs or crawls collects every concurrent call of a wave before enough
    outcomes exist to judge it. The last route of a call is never held back this way (there is
    nowhere else to go).

    What counts as a failure is the error's ``counts_as_failure`` flag (:mod:`dify_lc.errors`);
    cancellation and a consumer stopping a stream early never count.
    """

    fail_max: int = 5
    reset_timeout: float = 30.0
    window: int = 20
    min_calls: int = 10
    failure_rate: float = 0.5
    slow_call_duration: float | None = None
    slow_call_rate: float = 0.5
    half_open_probes: int = 1
    cold_start_limit: int | None = None

    def __post_init__(self) -> None:
        if self.fail_max < 1 or self.window < 1 or self.half_open_probes < 1:
            raise ValueError("fail_max, window and half_open_probes must be >= 1")
        if not (0 < self.failure_rate <= 1 and 0 < self.slow_call_rate <= 1):
            raise ValueError("rates must be in (0, 1]")


@dataclass(frozen=True, slots=True)
class Permit:
    """Admission to call a backend; ``probe``: a half-open trial; ``cold``: under the cold start.

    ``claim``: the Redis probe slot this probe holds, when the breaker state is shared, and
    ``period``: the open period it probes (only that period's half-open state may close).
    """

    probe: bool
    cold: bool = False
    claim: str | None = None
    period: int = 0


_NORMAL = Permit(probe=False)
_PROBE = Permit(probe=True)
_COLD = Permit(probe=False, cold=True)


class Breaker:
    """Circuit breaker of one backend.

    Args:
        name: the backend name (used for the pybreaker breaker it creates).
        policy: thresholds, see :class:`BreakerPolicy`.
        breaker: your own ``pybreaker.CircuitBreaker`` (memory or Redis storage, your
            listeners). Its ``fail_max`` and ``reset_timeout`` are used; the rate rules and the
            probe limit come from ``policy``. Its ``excluded_exceptions`` never count.
        wall: wall clock in seconds (pybreaker stores ``opened_at`` as a datetime); injectable.
    """

    __slots__ = (
        "_cb",
        "_cold_limit",
        "_fleet",
        "_in_flight",
        "_lock",
        "_probes",
        "_shared",
        "_storage",
        "_wall",
        "_warm",
        "_window",
        "name",
        "policy",
    )

    def __init__(
        self,
        name: str,
        policy: BreakerPolicy | None = None,
        *,
        breaker: pybreaker.CircuitBreaker | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.policy = policy = policy or BreakerPolicy()
        if breaker is None:
            breaker = pybreaker.CircuitBreaker(
                fail_max=policy.fail_max, reset_timeout=policy.reset_timeout, name=name
            )
        self._cb = breaker
        breaker.add_listener(_StateEvents())
        # pybreaker exposes opened_at and the counters only on its storage object.
        self._storage = breaker._state_storage
        # Redis storage: half-open probes are claimed in Redis, so one process probes.
        self._shared = isinstance(self._storage, pybreaker.CircuitRedisStorage)
        # dify-lc's own Redis storage: transitions are atomic scripts (see shared.py).
        self._fleet = self._storage if isinstance(self._storage, SharedStorage) else None
        if self._fleet is not None:
            self._fleet.circuit = breaker
        self._wall = wall
        self._lock = threading.Lock()
        self._probes = 0
        self._window: deque[int] = deque(maxlen=policy.window)
        self._warm = False  # has the backend shown min_calls outcomes with healthy rates?
        self._in_flight = 0  # calls admitted while cold
        limit = policy.cold_start_limit
        self._cold_limit = breaker.fail_max if limit is None else limit

    @property
    def circuit(self) -> pybreaker.CircuitBreaker:
        """The underlying pybreaker breaker (state, storage, listeners)."""
        return self._cb

    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half-open"`` (as stored, possibly shared)."""
        return self._cb.current_state

    def __repr__(self) -> str:
        return f"Breaker({self.name!r}, state={self.state!r})"

    # ------------------------------------------------------------------ admission

    def admit(self, *, last: bool = False, probe_ttl: float | None = None) -> Permit | None:
        """May this backend be called now? ``None`` means rejected (no I/O, microseconds).

        ``last``: no other route is left for this call, so the cold-start limit does not apply.
        ``probe_ttl``: how long the call may take (its deadline); a shared half-open probe
        claim is held that long.
        """
        state = self._storage.state
        if state == CLOSED:
            if self._warm or last:
                return _NORMAL
            with self._lock:
                if self._warm:
                    return _NORMAL
                if self._in_flight >= self._cold_limit:
                    return None
                self._in_flight += 1
            return _COLD
        opened_at = self._storage.opened_at
        if state == OPEN:
            self._warm = False  # (possibly opened by another process) prove itself again
            if opened_at is not None and self._wall() < (
                opened_at.timestamp() + self._cb.reset_timeout
            ):
                return None
        ttl = max(self._cb.reset_timeout, probe_ttl or DEFAULT_PROBE_TTL, 1.0)
        return self._probe(opened_at, opening=state == OPEN, ttl=ttl)

    def _probe(self, opened_at: datetime | None, *, opening: bool, ttl: float) -> Permit | None:
        """Claim one of the half-open probes (in Redis when shared); move open → half-open."""
        limit = self.policy.half_open_probes
        fleet = self._fleet
        if fleet is not None:
            won = fleet.claim(limit, ttl, self._cb.reset_timeout, self._wall())
            if won is None:
                return None
            if isinstance(won, tuple):
                key, moved, period = won
                if moved:
                    self._cb.state = HALF_OPEN  # fires state_change listeners
                return Permit(probe=True, claim=key, period=period)
        elif self._shared:
            epoch = int(opened_at.timestamp()) if opened_at is not None else 0
            claim = claim_probe(self._storage, epoch, limit, ttl)
            if claim is None:
                return None
            if claim is not LOCAL:
                if opening and self._storage.state == OPEN:
                    self._cb.half_open()  # only the claim's winner moves the shared state
                return Permit(probe=True, claim=claim)
        # Local counting: memory storage, or Redis unreachable.
        with self._lock:
            if opening and self._storage.state == OPEN:
                self._probes = 0
                if fleet is not None:
                    fleet.publish_move(OPEN, fleet.period, HALF_OPEN)
                    self._cb.state = HALF_OPEN
                else:
                    self._cb.half_open()  # fires state_change listeners
            if self._probes >= limit:
                return None
            self._probes += 1
        return Permit(probe=True, period=fleet.period if fleet is not None else 0)

    # ------------------------------------------------------------------ outcomes

    def success(self, permit: Permit, latency: float) -> None:
        """Record a successful call that took ``latency`` seconds."""
        slow_after = self.policy.slow_call_duration
        slow = slow_after is not None and latency >= slow_after
        if permit.cold:
            with self._lock:
                self._in_flight -= 1
        if permit.probe:
            if permit.claim is None:
                with self._lock:
                    self._probes = max(self._probes - 1, 0)
            with self._lock:
                self._window.clear()
            fleet = self._fleet
            if fleet is not None:
                # Only the half-open state of the period this probe tested may close.
                if fleet.publish_move(HALF_OPEN, permit.period, CLOSED):
                    self._cb.state = CLOSED  # fires state_change listeners
            elif self._storage.state == HALF_OPEN:
                self._cb.close()  # resets pybreaker's counter, fires listeners
            if permit.claim is not None:
                release_probe(self._storage, permit.claim)  # its period is over
        else:
            if self._storage.counter:
                self._storage.reset_counter()
            with self._lock:
                self._window.append(_SLOW if slow else _OK)
                trip = self._rates_trip()
                if not trip and not self._warm and len(self._window) >= self.policy.min_calls:
                    self._warm = True  # proven: min_calls outcomes with healthy rates
            if trip:
                self._open()
        for listener in self._cb.listeners:
            listener.success(self._cb)

    def failure(self, permit: Permit, error: BaseException, latency: float) -> None:
        """Record a failed call; errors that do not count only release the permit."""
        if not _counts(self._cb, error):
            self.release(permit)
            return
        if permit.cold:
            with self._lock:
                self._in_flight -= 1
        for listener in self._cb.listeners:
            listener.failure(self._cb, error)
        if permit.probe:
            if permit.claim is None:
                with self._lock:
                    self._probes = max(self._probes - 1, 0)
            self._open()
            if permit.claim is not None:
                release_probe(self._storage, permit.claim)  # a new period has begun
            return
        fleet = self._fleet
        if fleet is not None:
            count = fleet.add_failure()  # Redis's own count, not a later read
        else:
            self._storage.increment_counter()
            count = self._storage.counter  # read outside our lock: may be a Redis GET
        with self._lock:
            self._window.append(_FAILED)
            trip = count >= self._cb.fail_max or self._rates_trip()
        if trip:
            self._open()

    def release(self, permit: Permit) -> None:
        """The call ended without an outcome (cancelled, stream stopped early): no count."""
        if permit.cold:
            with self._lock:
                self._in_flight -= 1
        elif permit.claim is not None:
            release_probe(self._storage, permit.claim)
        elif permit.probe:
            with self._lock:
                self._probes = max(self._probes - 1, 0)

    # ------------------------------------------------------------------ internals

    def _rates_trip(self) -> bool:
        window = self._window
        n = len(window)
        if n < self.policy.min_calls:
            return False
        failed = window.count(_FAILED)
        if failed / n >= self.policy.failure_rate:
            return True
        if self.policy.slow_call_duration is not None:
            return window.count(_SLOW) / n >= self.policy.slow_call_rate
        return False

    def _open(self) -> None:
        with self._lock:
            self._window.clear()
            self._warm = False  # after recovering it must prove itself again
        now = datetime.fromtimestamp(self._wall(), UTC)
        fleet = self._fleet
        if fleet is not None:
            # State, time and a new period in one script; listeners hear only a real change
            # (two threads tripping together both publish, one of them finds it open).
            if fleet.publish_open(now):
                self._cb.state = OPEN  # fires state_change listeners
            return
        if self._storage.state != OPEN:
            self._cb.open()  # fires state_change listeners
        # pybreaker stamps opened_at with its own wall clock; use ours so tests control time.
        self._storage.opened_at = now


def _counts(cb: pybreaker.CircuitBreaker, error: BaseException) -> bool:
    if isinstance(error, DifyLCError):
        if not error.counts_as_failure:
            return False
        cause = error.__cause__
        if cause is not None and not cb.is_system_error(cause):
            return False
    return cb.is_system_error(error)


class _StateEvents(pybreaker.CircuitBreakerListener):
    """Breaker state changes become ``breaker.state`` events (and still reach your listeners)."""

    def state_change(
        self,
        cb: pybreaker.CircuitBreaker,
        old_state: pybreaker.CircuitBreakerState | None,
        new_state: pybreaker.CircuitBreakerState,
    ) -> None:
        emit(
            "breaker.state",
            {
                "backend": cb.name,
                "from": old_state.name if old_state is not None else None,
                "to": new_state.name,
                "fail_counter": cb.fail_counter,
            },
        )
