"""The only module that does network I/O: one pooled HTTP client per endpoint.

An :class:`Endpoint` owns one ``httpx.Client`` (created on first use, reused by every sync call)
and one ``httpx.AsyncClient`` per running event loop (an async client cannot cross loops). The
async client is backed by aiohttp through ``httpx-aiohttp`` by default: httpx's own async pool
was the bottleneck under concurrency (see ``benchmarks/``). Proxies come from the environment
(``HTTP(S)_PROXY``/``NO_PROXY``, handled by httpx's mounts), TLS verification is on.

Every failure leaves this module as a typed :mod:`dify_lc.errors` error; nothing above it
catches httpx or aiohttp exceptions.
"""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from httpx_sse import EventSource, SSEError

from dify_lc.errors import (
    APIConnectionError,
    APITimeoutError,
    DifyLCError,
    ProtocolError,
)
from dify_lc.protocol.dify import Request
from dify_lc.protocol.error_mapping import error_from_response

__all__ = ["Endpoint", "Timeouts"]

USER_AGENT = "dify-lc/0.1"
AsyncBackend = Literal["aiohttp", "httpx"]


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Timeouts of one call, in seconds.

    Attributes:
        connect: to establish a connection (default 10).
        read: maximum silence between two reads (default 60). Dify pings every 10 s during a
            stream, so a healthy stream never trips it.
        total: budget of the whole call, streaming included (``None``: no budget). Enforced
            between reads and by capping each read at the time left.
    """

    connect: float = 10.0
    read: float = 60.0
    total: float | None = None

    def deadline(self) -> float | None:
        """The monotonic instant the call must finish by."""
        return None if self.total is None else time.monotonic() + self.total


def _httpx_timeout(timeouts: Timeouts, deadline: float | None) -> httpx.Timeout:
    connect, read = timeouts.connect, timeouts.read
    if deadline is not None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise APITimeoutError("total timeout exhausted before the request was sent")
        connect, read = min(connect, left), min(read, left)
    return httpx.Timeout(connect=connect, read=read, write=read, pool=connect)


def _transport_error(exc: Exception, backend: str, idempotent: bool) -> DifyLCError:
    """Classify a transport failure: could the request have reached the server?"""
    cause = exc.__cause__
    cause_name = type(cause).__name__ if cause is not None else ""
    # httpx-aiohttp maps every aiohttp ClientConnectionError (server disconnect, reset) to
    # ConnectTimeout; the aiohttp cause tells what really happened.
    if cause_name in (
        "ClientConnectorError",
        "ClientConnectorDNSError",
        "ClientProxyConnectionError",
    ):
        return APIConnectionError(
            f"connection failed: {cause}", request_sent=False, backend=backend
        )
    if cause_name in ("ConnectionTimeoutError",):
        return APITimeoutError("connect timeout", request_sent=False, backend=backend)
    if cause_name in ("ServerDisconnectedError", "ClientOSError", "ClientPayloadError"):
        return APIConnectionError(
            f"connection lost: {cause}",
            request_sent=True,
            retryable=idempotent,
            backend=backend,
        )
    if cause_name == "SocketTimeoutError":
        return APITimeoutError(
            "read timeout", request_sent=True, retryable=idempotent, backend=backend
        )
    if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
        return APITimeoutError(f"connect timeout: {exc}", request_sent=False, backend=backend)
    if isinstance(exc, httpx.ConnectError):
        return APIConnectionError(f"connection failed: {exc}", request_sent=False, backend=backend)
    if isinstance(exc, httpx.TimeoutException | asyncio.TimeoutError):
        return APITimeoutError(
            f"read timeout: {exc}" if str(exc) else "read timeout",
            request_sent=True,
            retryable=idempotent,
            backend=backend,
        )
    return APIConnectionError(
        f"connection lost: {exc!r}", request_sent=True, retryable=idempotent, backend=backend
    )


class Endpoint:
    """Pooled HTTP access to one base URL with one set of credentials.

    Args:
        base_url: e.g. ``https://api.dify.ai/v1`` (no trailing slash needed).
        api_key: sent as ``Authorization: Bearer …``; never logged or put in errors.
        backend: the name used in errors and events.
        idempotent: may a request that reached the server be retried (relays: yes; Dify: no).
        timeouts: default :class:`Timeouts`.
        async_backend: ``"aiohttp"`` (default, fast) or ``"httpx"`` (httpx's own pool).
        http_client / http_async_client: bring your own clients (then you own their lifetime;
            the ``Authorization`` header is still added per request).
        max_connections: pool size per client.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str,
        backend: str,
        idempotent: bool,
        timeouts: Timeouts,
        verify: bool = True,
        async_backend: AsyncBackend = "aiohttp",
        http_client: httpx.Client | None = None,
        http_async_client: httpx.AsyncClient | None = None,
        max_connections: int = 100,
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.backend = backend
        self.idempotent = idempotent
        self.timeouts = timeouts
        self.secrets = (api_key,) if api_key else ()
        self._headers = {
            "authorization": f"Bearer {api_key}",
            "user-agent": USER_AGENT,
            **(extra_headers or {}),
        }
        self._stream_headers = {**self._headers, "accept": "text/event-stream"}
        self._timeout = _httpx_timeout(timeouts, None)
        self._verify = verify
        self._async_backend = async_backend
        self._limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._client = http_client
        self._own_client = http_client is None
        self._user_async_client = http_async_client
        self._aclients: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[httpx.AsyncClient, asyncio.Task[None]]
        ] = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:  # no key
        return f"Endpoint({self.base_url!r}, backend={self.backend!r})"

    # ------------------------------------------------------------------ clients

    def _sync_client(self) -> httpx.Client:
        client = self._client
        if client is None:
            client = self._client = httpx.Client(
                limits=self._limits, verify=self._verify, trust_env=True
            )
            # Pooled sockets are closed when the endpoint (i.e. its model) is collected.
            weakref.finalize(self, client.close)
        return client

    def _async_client(self) -> httpx.AsyncClient:
        if self._user_async_client is not None:
            return self._user_async_client
        loop = asyncio.get_running_loop()
        entry = self._aclients.get(loop)
        if entry is not None:
            return entry[0]
        if self._async_backend == "aiohttp":
            from httpx_aiohttp import AiohttpTransport

            # Mounted on "all://" rather than passed as `transport=`: httpx ignores the
            # environment's proxies when given a transport, but keeps them as more specific
            # mounts next to ours (HTTP(S)_PROXY go through httpx's proxy transport).
            client = httpx.AsyncClient(
                mounts={"all://": AiohttpTransport(verify=self._verify, limits=self._limits)},
                limits=self._limits,
                verify=self._verify,
                trust_env=True,
            )
        else:
            client = httpx.AsyncClient(limits=self._limits, verify=self._verify, trust_env=True)
        # The client belongs to this loop. A keeper task closes it when the loop shuts down
        # (asyncio.run and pytest-asyncio cancel pending tasks), so no "unclosed session"
        # noise when a program runs several loops.
        keeper = loop.create_task(_close_at_shutdown(client), name="dify-lc:http-client-keeper")
        self._aclients[loop] = (client, keeper)
        return client

    def close(self) -> None:
        """Close the sync client (if we own it)."""
        if self._client is not None and self._own_client:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        """Close the current loop's async client (if we own it)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - only called from async code
            return
        entry = self._aclients.pop(loop, None)
        if entry is not None:
            client, keeper = entry
            keeper.cancel()
            await client.aclose()

    # ------------------------------------------------------------------ helpers

    def _build(self, req: Request, deadline: float | None, stream: bool) -> dict[str, Any]:
        # Hot path: headers and the no-deadline timeout are built once per endpoint.
        return {
            "method": req.method,
            "url": self.base_url + req.path,
            "params": req.params,
            "json": req.json,
            "headers": self._stream_headers if stream else self._headers,
            "timeout": self._timeout
            if deadline is None
            else _httpx_timeout(self.timeouts, deadline),
        }

    def _error(self, response: httpx.Response, body: bytes) -> DifyLCError:
        return error_from_response(
            response.status_code,
            response.headers,
            body,
            backend=self.backend,
            secrets=self.secrets,
        )

    def _decode_json(self, response: httpx.Response, body: bytes) -> Any:
        if response.status_code >= 400:
            raise self._error(response, body)
        if not body.strip():
            return None  # e.g. DELETE answered by 204 (Dify >= 1.3.1)
        try:
            return json.loads(body)
        except ValueError as exc:  # includes invalid UTF-8
            raise ProtocolError(
                f"response is not valid JSON ({response.headers.get('content-type')}): "
                f"{body[:200]!r}",
                status=response.status_code,
                backend=self.backend,
                retryable=self.idempotent,
            ) from exc

    def _not_a_stream(self, response: httpx.Response, exc: SSEError) -> ProtocolError:
        return ProtocolError(
            f"expected an event stream: {exc}",
            status=response.status_code,
            backend=self.backend,
            retryable=self.idempotent,
        )

    def _timed_out(self) -> APITimeoutError:
        return APITimeoutError(
            "total timeout exceeded", request_sent=True, retryable=False, backend=self.backend
        )

    # ------------------------------------------------------------------ sync

    def request_json(self, req: Request, *, deadline: float | None = None) -> Any:
        """Send a request and return its decoded JSON body (``None`` when empty)."""
        try:
            response = self._sync_client().request(**self._build(req, deadline, False))
        except httpx.HTTPError as exc:
            raise _transport_error(exc, self.backend, self.idempotent) from exc
        return self._decode_json(response, response.content)

    @contextmanager
    def sse(
        self, req: Request, *, deadline: float | None = None
    ) -> Iterator[Iterator[tuple[str, str]]]:
        """Open an SSE stream; yields an iterator of ``(event, data)`` pairs.

        HTTP errors are raised before any event. The iterator raises typed errors on transport
        failure and on the total deadline; closing the context closes the connection.
        """
        client = self._sync_client()
        try:
            cm = client.stream(**self._build(req, deadline, True))
            response = cm.__enter__()
        except httpx.HTTPError as exc:
            raise _transport_error(exc, self.backend, self.idempotent) from exc
        try:
            if response.status_code >= 400:
                try:
                    body = response.read()
                except httpx.HTTPError as exc:
                    raise _transport_error(exc, self.backend, self.idempotent) from exc
                raise self._error(response, body)
            yield self._iter_events(response, deadline)
        finally:
            cm.__exit__(None, None, None)

    def _iter_events(
        self, response: httpx.Response, deadline: float | None
    ) -> Iterator[tuple[str, str]]:
        try:
            for sse in EventSource(response).iter_sse():
                if deadline is not None and time.monotonic() > deadline:
                    raise self._timed_out()
                yield sse.event, sse.data
        except SSEError as exc:  # subclasses httpx.TransportError: catch it first
            raise self._not_a_stream(response, exc) from exc
        except httpx.HTTPError as exc:
            raise _transport_error(exc, self.backend, self.idempotent) from exc
        except UnicodeDecodeError as exc:
            raise ProtocolError("stream is not valid UTF-8", backend=self.backend) from exc

    # ------------------------------------------------------------------ async

    async def arequest_json(self, req: Request, *, deadline: float | None = None) -> Any:
        """Async twin of :meth:`request_json`; the total deadline is exact here."""
        client = self._async_client()
        try:
            if deadline is None:
                response = await client.request(**self._build(req, deadline, False))
                body = await response.aread()
            else:
                async with asyncio.timeout(max(deadline - time.monotonic(), 0)):
                    response = await client.request(**self._build(req, deadline, False))
                    body = await response.aread()
        except (httpx.HTTPError, TimeoutError) as exc:
            raise _transport_error(exc, self.backend, self.idempotent) from exc
        return self._decode_json(response, body)

    @asynccontextmanager
    async def asse(
        self, req: Request, *, deadline: float | None = None
    ) -> AsyncIterator[AsyncIterator[tuple[str, str]]]:
        """Async twin of :meth:`sse`."""
        client = self._async_client()
        try:
            response = await client.send(
                client.build_request(**self._build(req, deadline, True)),
                stream=True,
            )
        except httpx.HTTPError as exc:
            raise _transport_error(exc, self.backend, self.idempotent) from exc
        try:
            if response.status_code >= 400:
                try:
                    body = await response.aread()
                except httpx.HTTPError as exc:
                    raise _transport_error(exc, self.backend, self.idempotent) from exc
                raise self._error(response, body)
            yield self._aiter_events(response, deadline)
        finally:
            await response.aclose()

    async def _aiter_events(
        self, response: httpx.Response, deadline: float | None
    ) -> AsyncIterator[tuple[str, str]]:
        try:
            async for sse in EventSource(response).aiter_sse():
                if deadline is not None and time.monotonic() > deadline:
                    raise self._timed_out()
                yield sse.event, sse.data
        except SSEError as exc:  # subclasses httpx.TransportError: catch it first
            raise self._not_a_stream(response, exc) from exc
        except httpx.HTTPError as exc:
            raise _transport_error(exc, self.backend, self.idempotent) from exc
        except UnicodeDecodeError as exc:
            raise ProtocolError("stream is not valid UTF-8", backend=self.backend) from exc


async def _close_at_shutdown(client: httpx.AsyncClient) -> None:
    try:
        await asyncio.Event().wait()
    finally:
        await client.aclose()
