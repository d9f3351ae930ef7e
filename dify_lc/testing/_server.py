"""Thread-and-loop harness shared by the fake servers.

Each server is an `aiohttp.web.Server` (the low-level one: no router, no middlewares) behind a
`ServerRunner` + `TCPSite` on a loopback address. It runs on its own event loop in a daemon
thread, so sync tests, async tests (whose loop is a different one) and other processes can all
talk to it. `start()`/`stop()` block; the async context manager runs them in a worker thread so
the caller's loop keeps turning.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, NoReturn, Self

from aiohttp import web
from multidict import CIMultiDict

from ._chaos import Chaos
from ._faults import Fault

__all__ = ["FakeServer", "RecordedRequest"]

# Never recorded: they are secrets.
_SECRET_HEADERS = frozenset({"authorization", "x-api-key", "api-key"})


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the fake server saw it.

    `path` is the full path (e.g. `/v1/chat-messages`); `json` is the parsed body, or None when
    it was empty or not JSON; `headers` has lower-case names and never the credentials.
    """

    method: str
    path: str
    query: dict[str, str]
    json: Any
    headers: dict[str, str]
    body: bytes
    received_at: float = 0.0  # time.time() when the request arrived


def _check_loopback(host: str) -> None:
    # These servers accept fake credentials and hang on demand: never expose them.
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"fake servers bind loopback addresses only, not {host!r}")


class FakeServer:
    """Base class: lifecycle, request recording, the fault queue and seeded ids.

    Subclasses implement `_handle(request, body)`.
    """

    _thread_name = "fake-server"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
        record: bool = True,
        chunk_delay: float = 0.0,
        first_token_delay: float = 0.0,
    ) -> None:
        _check_loopback(host)
        self.host = host
        self.chunk_delay = chunk_delay
        self.first_token_delay = first_token_delay
        self.record = record
        self.requests: list[RecordedRequest] = []
        self._requested_port = port
        self._port: int | None = None
        self._faults: deque[Fault] = deque()
        self._default_fault: Fault | None = None
        self._chaos: Chaos | None = None
        # Only the server thread draws from it, so runs with the same seed and the same
        # request order produce the same ids.
        self._rng = random.Random(seed)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.ServerRunner | None = None
        self._inflight: set[asyncio.Task[Any]] = set()
        self._closing: asyncio.Event | None = None

    # -- addresses -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (the OS picks a free one for `port=0`)."""
        if self._port is None:
            raise RuntimeError("server not started")
        return self._port

    @property
    def url(self) -> str:
        """`http://host:port`, without the API prefix."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The API base URL clients are configured with: `http://host:port/v1`."""
        return f"{self.url}/v1"

    # -- faults ----------------------------------------------------------------------------

    def enqueue(self, *faults: Fault) -> None:
        """Queue faults for the next generate requests, one per request, in order."""
        self._faults.extend(faults)

    def set_default(self, fault: Fault | None) -> None:
        """The fault applied to every generate request while the queue is empty."""
        self._default_fault = fault

    def set_chaos(self, chaos: Chaos | None) -> None:
        """Draw each generate request's fault and latency from ``chaos`` (seeded by ``seed``)
        while the queue is empty and no default fault is set."""
        self._chaos = chaos

    def reset(self) -> None:
        """Forget recorded requests and queued faults (the default fault stays)."""
        self.requests.clear()
        self._faults.clear()

    def _next_fault(self) -> Fault | None:
        try:
            return self._faults.popleft()
        except IndexError:
            if self._default_fault is None and self._chaos is not None:
                return self._chaos.draw(self._rng)
            return self._default_fault

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        """Bind and serve in a daemon thread; returns once the port accepts connections."""
        if self._thread is not None:
            raise RuntimeError("server already started")
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            try:
                loop.run_until_complete(self._astart())
            except BaseException as exc:  # reported to the caller of start()
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                _cancel_remaining(loop)
                loop.close()

        thread = threading.Thread(target=run, name=self._thread_name, daemon=True)
        self._thread = thread
        thread.start()
        ready.wait()
        if failure:
            thread.join()
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:
        """Close the listener, end in-flight requests (hangs included) and join the thread."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._astop(), loop).result(timeout=10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            self._thread = None
            self._loop = None
            self._port = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    async def _astart(self) -> None:
        self._closing = asyncio.Event()
        server = web.Server(self._dispatch, handler_cancellation=True, access_log=None)
        # shutdown_timeout is a safety net: _astop already cancels every in-flight handler.
        runner = web.ServerRunner(server, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._requested_port, backlog=1024)
        await site.start()
        self._runner = runner
        self._port = int(runner.addresses[0][1])

    async def _astop(self) -> None:
        assert self._closing is not None
        self._closing.set()
        for task in list(self._inflight):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- request plumbing ------------------------------------------------------------------

    async def _dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        task = asyncio.current_task()
        assert task is not None
        self._inflight.add(task)
        try:
            body = await request.read() if request.body_exists else b""
            return await self._handle(request, body)
        finally:
            self._inflight.discard(task)

    async def _handle(self, request: web.BaseRequest, body: bytes) -> web.StreamResponse:
        raise NotImplementedError

    def _fault_response(self, fault: Fault, data: Any) -> web.StreamResponse:
        """The HTTP error for `fault.status`, in this server's dialect."""
        raise NotImplementedError

    async def _transport_fault(
        self, request: web.BaseRequest, fault: Fault, data: Any
    ) -> web.StreamResponse | None:
        """Apply the faults that act before authentication; a response ends the request."""
        if fault.delay > 0:
            await asyncio.sleep(fault.delay)
        if fault.hang:
            await self._hang(request)
        if fault.reset_after == 0:
            await _abort(request)
        if fault.status is not None:
            return self._fault_response(fault, data)
        return None

    def _record(self, request: web.BaseRequest, body: bytes, parsed: Any) -> None:
        if not self.record:
            return
        headers = {k.lower(): v for k, v in request.headers.items()}
        for name in _SECRET_HEADERS:
            headers.pop(name, None)
        self.requests.append(
            RecordedRequest(
                method=request.method,
                path=request.path,
                query=dict(request.query),
                json=parsed,
                headers=headers,
                body=body,
                received_at=time.time(),
            )
        )

    def _new_uuid(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    async def _hang(self, request: web.BaseRequest) -> NoReturn:
        # Parked until the client goes away (handler_cancellation cancels us) or stop().
        assert self._closing is not None
        await self._closing.wait()
        await _abort(request)

    async def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            await asyncio.sleep(seconds)


def merge_headers(base: Mapping[str, str], extra: Mapping[str, str] | None) -> CIMultiDict[str]:
    """`base` overridden by `extra`, case-insensitively (no duplicate Content-Type)."""
    merged = CIMultiDict(base)
    if extra:
        for name, value in extra.items():
            merged[name] = value
    return merged


def parse_json(body: bytes) -> tuple[bool, Any]:
    """(ok, value): empty or malformed bodies are not ok."""
    if not body:
        return False, None
    try:
        return True, json.loads(body)
    except ValueError:
        return False, None


async def _abort(request: web.BaseRequest) -> NoReturn:
    """Reset the connection: no response, or no chunked terminator after a partial one."""
    transport = request.transport
    if transport is not None:
        # Let what was already written reach the peer first, so "after N events" holds.
        for _ in range(50):
            if not transport.get_write_buffer_size():
                break
            await asyncio.sleep(0.001)
        transport.abort()
    # Ends the handler without aiohttp writing anything more on this connection.
    raise asyncio.CancelledError


def _cancel_remaining(loop: asyncio.AbstractEventLoop) -> None:
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
