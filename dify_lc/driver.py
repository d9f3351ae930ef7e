"""The attempt loops: one per flavour (blocking/stream × sync/async), each a few lines.

Everything they decide comes from elsewhere: the protocol state machine says what an event
means and whether the stream is committed, :class:`~dify_lc.resilience.RetryPolicy` says
whether and how long to wait, the endpoint does the I/O. This is the seam every model
(ChatDify, ChatRelay, DifyWorkflow) runs through.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from dify_lc.errors import DifyLCError
from dify_lc.protocol.dify import Request
from dify_lc.protocol.stream import StreamState
from dify_lc.resilience.retry import RetryPolicy
from dify_lc.transport import Endpoint

__all__ = ["Call", "Driver"]

logger = logging.getLogger("dify_lc")

# Tasks that stop abandoned streams; referenced here so they are not garbage-collected.
_BACKGROUND: set[asyncio.Task[Any]] = set()
_STOP_BUDGET = 5.0  # seconds granted to the best-effort stop request


class Call:
    """One logical call: the request, its deadline, and the state of the current attempt."""

    __slots__ = (
        "abandon",
        "data",
        "deadline",
        "new_state",
        "request",
        "retry",
        "started",
        "state",
        "streaming",
    )

    def __init__(
        self,
        request: Request,
        *,
        streaming: bool,
        deadline: float | None,
        new_state: Callable[[], StreamState],
        abandon: Callable[[StreamState], Request | None] | None = None,
        data: dict[str, Any] | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.request = request
        self.retry = retry  # a per-call policy; None: the driver's
        self.streaming = streaming
        self.deadline = deadline
        self.new_state = new_state
        self.abandon = abandon
        self.state: StreamState | None = None
        self.started = time.perf_counter()
        self.data = data if data is not None else {}

    def elapsed_ms(self) -> float:
        """Milliseconds since the call started."""
        return round((time.perf_counter() - self.started) * 1000.0, 3)


class Driver:
    """Runs calls against one endpoint with one retry policy.

    ``sleep``, ``asleep``, ``clock`` and ``rand`` are injectable so tests never wait.
    """

    __slots__ = ("asleep", "clock", "endpoint", "rand", "retry", "sleep")

    def __init__(
        self,
        endpoint: Endpoint,
        retry: RetryPolicy,
        *,
        sleep: Callable[[float], None] = time.sleep,
        asleep: Callable[[float], Any] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.endpoint = endpoint
        self.retry = retry
        self.sleep = sleep
        self.asleep = asleep
        self.clock = clock
        self.rand = rand

    def _delay(self, err: DifyLCError, retry: int, call: Call) -> float | None:
        policy = call.retry or self.retry
        return policy.next_delay(
            err, retry, now=self.clock(), deadline=call.deadline, rand=self.rand
        )

    # ------------------------------------------------------------------ streams

    def events(self, call: Call) -> Iterator[Any]:
        """Typed stream outputs; failures before the first token are retried per policy."""
        retry = 0
        while True:
            state = call.state = call.new_state()
            try:
                with self.endpoint.sse(call.request, deadline=call.deadline) as events:
                    feed = state.feed
                    for event, data in events:
                        out = feed(event, data)
                        if out is not None:
                            yield out
                state.finish()
                return
            except DifyLCError as exc:
                err = state.fail(exc)
            except GeneratorExit:
                self._abandon(call)
                raise
            delay = self._delay(err, retry, call)
            if delay is None:
                raise err
            retry += 1
            self.sleep(delay)

    async def aevents(self, call: Call) -> AsyncIterator[Any]:
        """Async twin of :meth:`events`; cancellation also stops the server-side task."""
        retry = 0
        while True:
            state = call.state = call.new_state()
            try:
                async with self.endpoint.asse(call.request, deadline=call.deadline) as events:
                    feed = state.feed
                    async for event, data in events:
                        out = feed(event, data)
                        if out is not None:
                            yield out
                state.finish()
                return
            except DifyLCError as exc:
                err = state.fail(exc)
            except (GeneratorExit, asyncio.CancelledError):
                self._aabandon(call)
                raise
            delay = self._delay(err, retry, call)
            if delay is None:
                raise err
            retry += 1
            await self.asleep(delay)

    # ------------------------------------------------------------------ blocking

    def blocking(self, call: Call) -> Any:
        """One blocking request with retries; returns the decoded JSON body."""
        retry = 0
        while True:
            try:
                return self.endpoint.request_json(call.request, deadline=call.deadline)
            except DifyLCError as err:
                delay = self._delay(err, retry, call)
                if delay is None:
                    raise
            retry += 1
            self.sleep(delay)

    async def ablocking(self, call: Call) -> Any:
        """Async twin of :meth:`blocking`."""
        retry = 0
        while True:
            try:
                return await self.endpoint.arequest_json(call.request, deadline=call.deadline)
            except DifyLCError as err:
                delay = self._delay(err, retry, call)
                if delay is None:
                    raise
            retry += 1
            await self.asleep(delay)

    # ------------------------------------------------------------------ abandoned streams

    @staticmethod
    def _stop_request(call: Call) -> Request | None:
        state = call.state
        if state is None or state.ended or call.abandon is None:
            return None
        return call.abandon(state)

    def _abandon(self, call: Call) -> None:
        req = self._stop_request(call)
        if req is None:
            return
        try:
            self.endpoint.request_json(req, deadline=time.monotonic() + _STOP_BUDGET)
        except DifyLCError as exc:  # best effort: Dify answers 200 whatever happened
            logger.warning("could not stop an abandoned %s stream: %s", self.endpoint.backend, exc)

    def _aabandon(self, call: Call) -> None:
        req = self._stop_request(call)
        if req is None:
            return
        # Do not delay the cancellation: stop the server-side task in the background.
        task = asyncio.get_running_loop().create_task(self._astop(req))
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)

    async def _astop(self, req: Request) -> None:
        try:
            await self.endpoint.arequest_json(req, deadline=time.monotonic() + _STOP_BUDGET)
        except DifyLCError as exc:
            logger.warning("could not stop an abandoned %s stream: %s", self.endpoint.backend, exc)
