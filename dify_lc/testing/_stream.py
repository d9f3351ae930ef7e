"""The SSE driver shared by both fakes: timing, pings, stop and mid-stream faults.

A server describes one stream as a `StreamPlan` of ready-made frames (str, already in the
server's exact wire format) and `drive()` writes them. Frames are buffered and flushed only
before a real wait and at the end, so a stream without delays costs one socket write. Frames
are encoded with `surrogateescape`, so a lone surrogate U+DC80..U+DCFF goes out as the raw byte
0x80..0xFF (how `Fault(invalid_utf8=True)` sends bytes that are not UTF-8).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from aiohttp import web

from ._faults import Fault
from ._server import _abort

__all__ = ["PING", "StopFlag", "StreamPlan", "Timing", "drive", "spoil", "spoil_body"]

PING = "event: ping\n\n"
# 0xFF 0xFE as surrogate escapes: bytes that never occur in UTF-8.
_INVALID_UTF8 = "\udcff\udcfe"


def spoil(payload: str, fault: Fault | None) -> str:
    """`payload` (a JSON object, alone or as an SSE frame) as `fault.invalid_utf8` and
    `fault.oversized` send it: extra fields before its last `}`, so the JSON stays valid."""
    if fault is None or not (fault.invalid_utf8 or fault.oversized):
        return payload
    at = payload.rfind("}")
    if at < 0:  # not a JSON object (`data: [DONE]`): before the line end
        at = len(payload.rstrip("\n"))
    extra = ', "invalid": "' + _INVALID_UTF8 + '"' if fault.invalid_utf8 else ""
    if fault.oversized:
        size = len(payload.encode("utf-8", "surrogateescape")) + len(extra)
        pad = fault.oversized - size - len(', "padding": ""')
        extra += ', "padding": "' + "x" * max(pad, 0) + '"'
    return payload[:at] + extra + payload[at:]


def spoil_body(body: bytes, fault: Fault | None) -> bytes:
    """:func:`spoil` for a blocking response body."""
    if fault is None or not (fault.invalid_utf8 or fault.oversized):
        return body
    return spoil(body.decode(), fault).encode("utf-8", "surrogateescape")


@dataclass(slots=True)
class StopFlag:
    """The stop flag of one running Dify task, set by the `.../stop` endpoint."""

    user: str
    stopped: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def stop(self) -> None:
        self.stopped = True
        self.wake.set()


@dataclass(frozen=True, slots=True)
class Timing:
    first_token_delay: float
    chunk_delay: float
    pings: int = 0
    # Dify pings every 10 s from the start of the request, even between tokens; None: never.
    ping_interval: float | None = None

    @classmethod
    def resolve(
        cls, fault: Fault | None, first_token_delay: float, chunk_delay: float, ping: float | None
    ) -> Timing:
        if fault is None:
            return cls(first_token_delay, chunk_delay, 0, ping)
        return cls(
            first_token_delay if fault.first_token_delay is None else fault.first_token_delay,
            chunk_delay if fault.chunk_delay is None else fault.chunk_delay,
            fault.pings,
            ping,
        )

    def blocking_duration(self, chunks: int) -> float:
        """How long the equivalent stream takes to generate: what a blocking call waits."""
        return self.first_token_delay + self.chunk_delay * max(chunks - 1, 0)


@dataclass(slots=True)
class StreamPlan:
    """Frames of one stream.

    `finish(n, stopped)` returns the frames that end the stream after `n` content events,
    normally (`stopped=False`) or after a stop request.
    """

    content: Sequence[str]
    finish: Callable[[int, bool], Sequence[str]]
    error: Callable[[], str]
    invalid: str
    head: Sequence[str] = ()
    # Dify's keep-alive; relays use an SSE comment instead (new-api's `: PING`).
    ping: str = PING


class _Writer:
    __slots__ = ("_buf", "_next_ping", "_ping", "_ping_interval", "_resp", "_stop")

    def __init__(
        self,
        resp: web.StreamResponse,
        stop: StopFlag | None,
        ping_interval: float | None,
        ping: str,
    ) -> None:
        self._resp = resp
        self._ping = ping
        self._stop = stop
        self._buf: list[str] = []
        self._ping_interval = ping_interval
        loop = asyncio.get_running_loop()
        self._next_ping = loop.time() + ping_interval if ping_interval else float("inf")

    def emit(self, frame: str) -> None:
        self._buf.append(frame)

    async def flush(self) -> None:
        if self._buf:
            data = "".join(self._buf).encode("utf-8", "surrogateescape")
            self._buf.clear()
            await self._resp.write(data)

    @property
    def stopped(self) -> bool:
        return self._stop is not None and self._stop.stopped

    async def wait(self, seconds: float) -> None:
        """Sleep `seconds`, sending keep-alive pings when due; a stop request cuts it short."""
        if seconds <= 0:
            return
        await self.flush()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not self.stopped:
            now = loop.time()
            if now >= self._next_ping:
                self._buf.append(self._ping)
                await self.flush()
                self._next_ping += self._ping_interval or float("inf")
                continue
            if now >= deadline:
                return
            until = min(deadline, self._next_ping)
            if self._stop is None:
                await asyncio.sleep(until - now)
                continue
            try:
                async with asyncio.timeout(until - now):
                    await self._stop.wake.wait()
            except TimeoutError:
                pass


def _at(value: int | None, n: int) -> int:
    # A fault "after N events" with N beyond the end happens right after the last one.
    return -1 if value is None else min(value, n)


async def drive(
    request: web.BaseRequest,
    resp: web.StreamResponse,
    plan: StreamPlan,
    timing: Timing,
    fault: Fault | None,
    stop: StopFlag | None = None,
) -> int:
    """Write `plan` to the prepared `resp`; returns how many content events were sent."""
    out = _Writer(resp, stop, timing.ping_interval, plan.ping)
    for frame in plan.head:
        out.emit(frame)
    n = len(plan.content)
    reset_at = truncate_at = error_at = -1
    invalid = False
    if fault is not None:
        reset_at = _at(fault.reset_after, n)
        truncate_at = _at(fault.truncate_after, n)
        error_at = _at(fault.inband_error_after, n)
        invalid = fault.invalid_json

    # First token: explicit pings split the wait into equal slices.
    if timing.pings:
        piece = timing.first_token_delay / (timing.pings + 1)
        for _ in range(timing.pings):
            await out.wait(piece)
            if out.stopped:
                break
            out.emit(plan.ping)
        await out.wait(piece)
    else:
        await out.wait(timing.first_token_delay)

    sent = 0
    while True:
        if out.stopped:
            for frame in plan.finish(sent, True):
                out.emit(frame)
            break
        if sent == reset_at:
            await out.flush()
            await _abort(request)
        if sent == truncate_at:
            break
        if sent == error_at:
            out.emit(plan.error())
            break
        if sent == n:
            for frame in plan.finish(n, False):
                out.emit(frame)
            break
        if sent == 0:
            out.emit(spoil(plan.invalid if invalid else plan.content[0], fault))
        else:
            out.emit(plan.content[sent])
        sent += 1
        if sent < n:
            await out.wait(timing.chunk_delay)
    await out.flush()
    await resp.write_eof()
    return sent
