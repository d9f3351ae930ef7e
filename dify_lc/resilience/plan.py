"""The fallback plan of one logical call: which route next, wait or not, when to give up.

Pure decisions (no I/O, injected clock and randomness), in the style of tenacity's ``iter()``:
a driver asks :meth:`FallbackPlan.next` for a step — :class:`Try` a route or :class:`Wait` —
performs it, and reports :meth:`~FallbackPlan.success`, :meth:`~FallbackPlan.failure` or
:meth:`~FallbackPlan.abandon`. The sync, async and streaming drivers are short loops around it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dify_lc.errors import (
    AllRoutesFailedError,
    Attempt,
    BreakerOpenError,
    DifyLCError,
    StreamInterruptedError,
)
from dify_lc.resilience.breaker import Breaker, Permit
from dify_lc.resilience.classify import classify, is_cancellation
from dify_lc.resilience.retry import RetryPolicy

__all__ = ["FallbackPlan", "Outcome", "Route", "Try", "Wait"]


@dataclass(eq=False)
class Route:
    """One backend a resilient model may call.

    Attributes:
        name: label in events, metrics and ``AllRoutesFailedError`` (e.g. ``"official"``).
        runnable: a chat model (ours or any LangChain one) or any Runnable.
        breaker: its circuit breaker.
        weight: canary share in ``[0, 1]`` (0: only reached as a fallback or as the primary).
        idempotent: may a request that may have reached it be retried (relays and third-party
            APIs: yes; Dify: only when opted in, see ``ChatDify.retry_on_read_timeout``).
        native: a dify-lc model, which accepts the per-call deadline and Dify keywords.
    """

    name: str
    runnable: Any
    breaker: Breaker
    weight: float = 0.0
    idempotent: bool = True
    native: bool = False


@dataclass(frozen=True, slots=True)
class Try:
    """Call ``route`` now; ``timeout`` is what is left of the deadline (``None``: no deadline)."""

    route: Route
    permit: Permit
    timeout: float | None


@dataclass(frozen=True, slots=True)
class Wait:
    """Sleep this many seconds, then ask again."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt came to: ``ok``, ``error``, ``skipped`` (breaker), ``interrupted``
    (failed after its first token) or ``abandoned`` (the caller gave up)."""

    route: Route
    kind: str
    error: BaseException | None
    elapsed: float
    attempt: int
    result: Any = None


@dataclass
class FallbackPlan:
    """Decisions for one call over ``routes`` (already in the order to try them)."""

    routes: Sequence[Route]
    retry: RetryPolicy
    deadline: float | None
    clock: Callable[[], float] = time.monotonic
    rand: Callable[[], float] = random.random
    attempts: list[Attempt] = field(default_factory=list)
    _index: int = 0
    _retries: int = 0
    _wait: float | None = None
    _current: tuple[Route, Permit, float] | None = None
    served: Route | None = None
    _held_back: list[Route] = field(default_factory=list)
    _second_pass: bool = False
    observer: Callable[[FallbackPlan, Outcome], None] | None = None
    """Called after every attempt (and skipped route) with its :class:`Outcome`."""
    started: float = 0.0
    first_token_at: float | None = None
    request_id: str = ""
    bucket: float | None = None

    @property
    def route(self) -> Route | None:
        """The route of the attempt in progress."""
        return self._current[0] if self._current else None

    def __post_init__(self) -> None:
        self.started = self.clock()

    def _observe(
        self,
        route: Route,
        kind: str,
        error: BaseException | None,
        elapsed: float,
        result: Any = None,
    ) -> None:
        if self.observer is not None:
            # 1-based attempt number; failed attempts are already in `attempts`.
            number = len(self.attempts) + (1 if kind in ("ok", "abandoned") else 0)
            self.observer(self, Outcome(route, kind, error, elapsed, number, result))

    def next(self) -> Try | Wait:
        """The next step; raises when nothing is left to try."""
        if self._wait is not None:
            wait, self._wait = self._wait, None
            return Wait(wait)
        while self._index < len(self.routes):
            route = self.routes[self._index]
            now = self.clock()
            remaining = None if self.deadline is None else self.deadline - now
            if remaining is not None and remaining <= 0:
                raise self._give_up("deadline exceeded")
            last = self._index == len(self.routes) - 1 or self._second_pass
            permit = route.breaker.admit(last=last, probe_ttl=remaining)
            if permit is None:
                closed = route.breaker.state == "closed"
                why = (
                    "slow start: enough calls in flight to an unproven backend"
                    if closed
                    else ("circuit open")
                )
                skipped = BreakerOpenError(f"{why} for {route.name}", backend=route.name)
                self.attempts.append(Attempt(route.name, route.name, skipped, 0.0))
                self._observe(route, "skipped", skipped, 0.0)
                if closed and not self._second_pass:
                    self._held_back.append(route)
                self._advance()
                if self._index == len(self.routes) and self._held_back:
                    # Every other route refused: better an unproven backend than no answer.
                    self.routes = [*self.routes, *self._held_back]
                    self._held_back = []
                    self._second_pass = True
                continue
            self._current = (route, permit, now)
            return Try(route, permit, remaining)
        raise self._give_up("all routes failed")

    def success(self, result: Any = None) -> Route:
        """The attempt succeeded (``result``: the message, for events); returns its route."""
        route, permit, started = self._take()
        elapsed = self.clock() - started
        route.breaker.success(permit, elapsed)
        self.served = route
        self._observe(route, "ok", None, elapsed, result)
        return route

    def abandon(self) -> None:
        """The caller gave up (cancelled, stopped the stream): no outcome is counted."""
        if self._current is not None:
            route, permit, started = self._take()
            route.breaker.release(permit)
            self._observe(route, "abandoned", None, self.clock() - started)

    def failure(self, exc: BaseException) -> None:
        """The attempt failed before any content reached the caller.

        Records it, then either schedules a retry of the same route, moves to the next route, or
        raises (cancellation; an error that no other backend would fix).
        """
        if is_cancellation(exc):
            self.abandon()
            raise exc
        route, permit, started = self._take()
        elapsed = self.clock() - started
        err = classify(exc, backend=route.name, idempotent=route.idempotent)
        route.breaker.failure(permit, err, elapsed)
        self.attempts.append(Attempt(route.name, err.backend, err, elapsed))
        self._observe(route, "error", err, elapsed)
        delay = self.retry.next_delay(
            err, self._retries, now=self.clock(), deadline=self.deadline, rand=self.rand
        )
        if delay is not None:
            self._retries += 1
            self._wait = delay
            return
        if not err.allows_fallback:
            raise err
        self._advance()

    def failure_after_commit(self, exc: BaseException, partial_text: str) -> BaseException:
        """A stream failed after content reached the caller: the error to raise (no retry)."""
        if is_cancellation(exc):
            self.abandon()
            return exc
        route, permit, started = self._take()
        elapsed = self.clock() - started
        err = classify(exc, backend=route.name, idempotent=route.idempotent)
        route.breaker.failure(permit, err, elapsed)
        self.attempts.append(Attempt(route.name, err.backend, err, elapsed))
        self._observe(route, "interrupted", err, elapsed)
        if isinstance(err, StreamInterruptedError):
            return err
        interrupted = StreamInterruptedError(
            f"stream from {route.name} interrupted after {len(partial_text)} characters: {err}",
            partial_text=partial_text,
            status=err.status,
            code=err.code,
            backend=route.name,
        )
        interrupted.__cause__ = err
        return interrupted

    # ------------------------------------------------------------------ internals

    def _take(self) -> tuple[Route, Permit, float]:
        current = self._current
        if current is None:
            raise RuntimeError("no attempt in progress")
        self._current = None
        return current

    def _advance(self) -> None:
        self._index += 1
        self._retries = 0

    def _give_up(self, why: str) -> DifyLCError:
        err = AllRoutesFailedError(why, attempts=list(self.attempts))
        if self.attempts:
            err.__cause__ = self.attempts[-1].error
        return err
