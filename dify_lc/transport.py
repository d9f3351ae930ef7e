"""The only module that does network I/O: one pooled HTTP client per endpoint.

An :class:`Endpoint` owns one ``httpx.Client`` (created on first use, reused by every sync call)
and, per running event loop (an async client cannot cross loops), one ``aiohttp.ClientSession``
(default) or one ``httpx.AsyncClient`` (``async_backend="httpx"`` or a client you pass).
Why aiohttp for async: under concurrency httpx's async stack was the bottleneck — 427 calls/s
at 64 in flight where aiohttp did 3,700 against the same local server, and httpx over an aiohttp
transport still paid ~330 µs per call in httpx's request/response layer (``benchmarks/``).
Proxies come from the environment (``HTTP(S)_PROXY``/``NO_PROXY``) on every path, TLS
verification is on. Every path reads bodies incrementally under a size cap: a 2xx blocking body
(``max_body_bytes``), one SSE event (``max_event_bytes``), an error body (64 KiB, truncated).

Every failure leaves this module as a typed :mod:`dify_lc.errors` error; nothing above it
catches httpx or aiohttp exceptions.
"""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import aiohttp
import httpx

# httpx-sse's sans-I/O event decoder interprets the lines of every path (the version range is
# pinned in pyproject.toml because it lives in a private module).
from httpx_sse._decoders import SSEDecoder

from dify_lc.errors import (
    APIConnectionError,
    APITimeoutError,
    DifyLCError,
    ProtocolError,
)
from dify_lc.protocol.dify import Request
from dify_lc.protocol.error_mapping import error_from_response

__all__ = ["DEFAULT_MAX_BODY_BYTES", "DEFAULT_MAX_EVENT_BYTES", "Endpoint", "Timeouts"]

USER_AGENT = "dify-lc/0.1"
AsyncBackend = Literal["aiohttp", "httpx"]

DEFAULT_MAX_BODY_BYTES = 32 * 2**20
"""Default cap on a successful blocking response body (32 MiB)."""
DEFAULT_MAX_EVENT_BYTES = 4 * 2**20
"""Default cap on one SSE event, the line still arriving included (4 MiB)."""
ERROR_BODY_BYTES = 64 * 2**10
"""An error response's body is read up to this many bytes (64 KiB), the rest is dropped."""


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


def _transport_error(exc: BaseException, backend: str, idempotent: bool) -> DifyLCError:
    """Classify a transport failure (httpx or aiohttp): could the request have reached the server?

    A request that never left (connect refused, DNS, connect timeout, no pooled connection) is
    always safe to retry; one that may have reached the server (read timeout, reset, server
    disconnect) only on an idempotent-safe backend.
    """
    if isinstance(exc, aiohttp.ClientConnectorError | httpx.ConnectError) and not isinstance(
        exc, aiohttp.ClientProxyConnectionError
    ):
        return APIConnectionError(f"connection failed: {exc}", request_sent=False, backend=backend)
    if isinstance(exc, aiohttp.ConnectionTimeoutError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return APITimeoutError(
            f"connect timeout: {exc}" if str(exc) else "connect timeout",
            request_sent=False,
            backend=backend,
        )
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


_TRANSPORT_ERRORS = (httpx.HTTPError, aiohttp.ClientError, asyncio.TimeoutError)


class _SSEParser:
    """Bytes in, ``(event, data)`` pairs out: the one SSE parser of every path.

    Lines are split on the raw bytes (CR and LF never occur inside a UTF-8 sequence) and then
    decoded strictly, so a character cut by a chunk boundary is fine and invalid UTF-8 raises
    :class:`UnicodeDecodeError`. One event (its lines so far plus the line still arriving) may
    hold ``limit`` bytes: past that :class:`ProtocolError`, before the rest is buffered. An
    event the body ends in the middle of is dropped, as the SSE spec says.

    Only the line splitting is ours (events are still httpx-sse's ``SSEDecoder``): httpx-sse's
    line decoder takes text that httpx decoded with ``errors="replace"``, so invalid UTF-8
    turned silently into U+FFFD, and neither it nor ``EventSource`` can cap a line's size.
    """

    __slots__ = ("_cr", "_decoder", "_event_size", "_limit", "_tail", "_tail_size", "_too_large")

    def __init__(self, limit: int, too_large: Callable[[], ProtocolError]) -> None:
        self._limit = limit
        self._too_large = too_large
        self._decoder = SSEDecoder()
        self._tail: list[bytes] = []  # the line still arriving, in pieces
        self._tail_size = 0
        self._event_size = 0  # bytes of the complete lines of the current event
        self._cr = False  # the last chunk ended with CR: a LF opening the next one is its pair

    def feed(self, chunk: bytes) -> Iterator[tuple[str, str]]:
        """The events that ``chunk`` completes, in order (an error comes after them)."""
        if self._cr and chunk:
            self._cr = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if b"\r" in chunk:  # rare: every server we know ends lines with LF alone
            self._cr = chunk[-1:] == b"\r"
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = chunk.split(b"\n")
        tail = lines.pop()  # b"" when the chunk ends a line
        if lines:
            if self._tail:
                self._tail.append(lines[0])
                lines[0] = b"".join(self._tail)
                self._tail = []
                self._tail_size = 0
            decode, limit, size = self._decoder.decode, self._limit, self._event_size
            for line in lines:
                size += len(line) + 1
                if size > limit:
                    raise self._too_large()
                if not line:
                    size = 0  # the blank line ends the event
                sse = decode(line.decode())
                if sse is not None:
                    yield sse.event, sse.data
            self._event_size = size
        if tail:
            self._tail.append(tail)
            self._tail_size += len(tail)
            if self._tail_size + self._event_size > self._limit:
                raise self._too_large()


class _CappedBody:
    """A response body read chunk by chunk under the cap of its status (no I/O here).

    A 2xx body over ``max_body_bytes`` (declared by ``Content-Length``, or read) raises
    :class:`ProtocolError`; an error body is read for its message only, cut at 64 KiB.
    """

    __slots__ = ("_cap", "_chunks", "_endpoint", "_size", "_status")

    def __init__(self, endpoint: Endpoint, status: int, headers: Mapping[str, str]) -> None:
        self._endpoint, self._status = endpoint, status
        self._chunks: list[bytes] = []
        self._size = 0
        if status >= 400:
            self._cap = ERROR_BODY_BYTES
        else:
            self._cap = endpoint.max_body_bytes
            declared = headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > self._cap:
                raise endpoint._body_too_large(status)

    def feed(self, chunk: bytes) -> bool:
        """Add a chunk; ``True`` once the cap is crossed (stop reading)."""
        self._chunks.append(chunk)
        self._size += len(chunk)
        return self._size > self._cap

    def result(self) -> bytes:
        body = b"".join(self._chunks)
        if self._size <= self._cap:
            return body
        if self._status >= 400:
            return body[: self._cap]
        raise self._endpoint._body_too_large(self._status)


class Endpoint:
    """Pooled HTTP access to one base URL with one set of credentials.

    Args:
        base_url: e.g. ``https://api.dify.ai/v1`` (no trailing slash needed).
        api_key: sent as ``Authorization: Bearer …``; never logged or put in errors.
        backend: the name used in errors and events.
        idempotent: may a request that reached the server be retried (relays: yes; Dify: no).
        timeouts: default :class:`Timeouts`.
        async_backend: ``"aiohttp"`` (default, fast) or ``"httpx"`` (httpx's own async pool;
            what vcrpy cassettes replay through).
        http_client / http_async_client: bring your own clients (then you own their lifetime;
            the ``Authorization`` header is still added per request).
        max_connections: pool size per client.
        max_body_bytes: cap on a successful blocking response body (decoded), checked against
            ``Content-Length`` first and then while reading; past it, :class:`ProtocolError`.
        max_event_bytes: cap on one SSE event, the line still arriving included; past it,
            :class:`ProtocolError` at once. Both are attributes too, read on every call.

    An error response (status >= 400) is read up to 64 KiB and truncated there.
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
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.backend = backend
        self.idempotent = idempotent
        self.timeouts = timeouts
        self.max_body_bytes = max_body_bytes
        self.max_event_bytes = max_event_bytes
        self.secrets = (api_key,) if api_key else ()
        self._headers = {
            "authorization": f"Bearer {api_key}",
            "user-agent": USER_AGENT,
            **(extra_headers or {}),
        }
        self._stream_headers = {**self._headers, "accept": "text/event-stream"}
        self._json_headers = {**self._headers, "content-type": "application/json"}
        self._json_stream_headers = {**self._json_headers, "accept": "text/event-stream"}
        self._timeout = _httpx_timeout(timeouts, None)
        self._longest = max(timeouts.connect, timeouts.read)
        self._max_connections = max_connections
        self._aiohttp_proxy: str | None = None
        self._verify = verify
        self._async_backend = async_backend
        self._limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._client = http_client
        self._own_client = http_client is None
        self._user_async_client = http_async_client
        # Per event loop: the async client (an aiohttp session or an httpx client) and the
        # keeper task that closes it when that loop shuts down.
        self._aclients: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop,
            tuple[aiohttp.ClientSession | httpx.AsyncClient, asyncio.Task[None]],
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

    def _async_client(self) -> aiohttp.ClientSession | httpx.AsyncClient:
        if self._user_async_client is not None:
            return self._user_async_client
        loop = asyncio.get_running_loop()
        entry = self._aclients.get(loop)
        if entry is not None:
            return entry[0]
        client: aiohttp.ClientSession | httpx.AsyncClient
        if self._async_backend == "aiohttp":
            connector = aiohttp.TCPConnector(limit=self._max_connections, ssl=self._verify)
            # No trust_env: it costs two thread-pool hops per request (netrc and proxy lookup).
            # The base URL is fixed, so the environment's proxy is resolved once instead.
            self._aiohttp_proxy = _env_proxy_for(self.base_url)
            client = aiohttp.ClientSession(connector=connector)
            closer: Callable[[], Awaitable[None]] = client.close
        else:
            client = httpx.AsyncClient(limits=self._limits, verify=self._verify, trust_env=True)
            closer = client.aclose
        # The client belongs to this loop. A keeper task closes it when the loop shuts down
        # (asyncio.run and pytest-asyncio cancel pending tasks), so no "unclosed session"
        # noise when a program runs several loops.
        keeper = loop.create_task(_close_at_shutdown(closer), name="dify-lc:http-client-keeper")
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
            if isinstance(client, aiohttp.ClientSession):
                await client.close()
            else:
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
            "timeout": self._timeout_for(deadline),
        }

    def _timeout_for(self, deadline: float | None) -> httpx.Timeout:
        # A deadline further away than both timeouts changes nothing: reuse the shared object.
        if deadline is None or deadline - time.monotonic() >= self._longest:
            return self._timeout
        return _httpx_timeout(self.timeouts, deadline)

    def _error(self, status: int, headers: Mapping[str, str], body: bytes) -> DifyLCError:
        return error_from_response(
            status, headers, body, backend=self.backend, secrets=self.secrets
        )

    def _decode_json(self, status: int, headers: Mapping[str, str], body: bytes) -> Any:
        if status >= 400:
            raise self._error(status, headers, body)
        if not body.strip():
            return None  # e.g. DELETE answered by 204 (Dify >= 1.3.1)
        try:
            return json.loads(body)
        except UnicodeDecodeError as exc:
            raise self._bad_body("response is not valid UTF-8", status) from exc
        except ValueError as exc:
            raise self._bad_body(
                f"response is not valid JSON ({headers.get('content-type')}): {body[:200]!r}",
                status,
            ) from exc

    def _bad_body(self, message: str, status: int) -> ProtocolError:
        return ProtocolError(
            message, status=status, backend=self.backend, retryable=self.idempotent
        )

    def _not_a_stream(self, status: int, content_type: str) -> ProtocolError:
        return self._bad_body(
            f"expected an event stream, got {content_type or 'no content type'!r}", status
        )

    def _event_too_large(self, status: int) -> ProtocolError:
        return self._bad_body(
            f"an event of the stream exceeds max_event_bytes ({self.max_event_bytes:,} bytes)",
            status,
        )

    def _body_too_large(self, status: int) -> ProtocolError:
        return self._bad_body(
            f"response body exceeds max_body_bytes ({self.max_body_bytes:,} bytes)", status
        )

    def _timed_out(self) -> APITimeoutError:
        return APITimeoutError(
            "total timeout exceeded", request_sent=True, retryable=False, backend=self.backend
        )

    # ------------------------------------------------------------------ sync

    def _read(self, response: httpx.Response) -> bytes:
        """The body of a streamed response, read under the cap of its status."""
        body = _CappedBody(self, response.status_code, response.headers)
        for chunk in response.iter_bytes():
            if body.feed(chunk):
                break
        return body.result()

    def request_json(self, req: Request, *, deadline: float | None = None) -> Any:
        """Send a request and return its decoded JSON body (``None`` when empty)."""
        try:
            with self._sync_client().stream(**self._build(req, deadline, False)) as response:
                body = self._read(response)
        except httpx.HTTPError as exc:
            raise _transport_error(exc, self.backend, self.idempotent) from exc
        return self._decode_json(response.status_code, response.headers, body)

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
            status = response.status_code
            if status >= 400:
                try:
                    body = self._read(response)
                except httpx.HTTPError as exc:
                    raise _transport_error(exc, self.backend, self.idempotent) from exc
                raise self._error(status, response.headers, body)
            content_type = response.headers.get("content-type", "")
            if "text/event-stream" not in content_type:
                raise self._not_a_stream(status, content_type)
            yield self._iter_events(response, deadline)
        finally:
            cm.__exit__(None, None, None)

    def _iter_events(
        self, response: httpx.Response, deadline: float | None
    ) -> Iterator[tuple[str, str]]:
        status = response.status_code
        feed = _SSEParser(self.max_event_bytes, lambda: self._event_too_large(status)).feed
        try:
            for chunk in response.iter_bytes():
                for event in feed(chunk):
                    if deadline is not None and time.monotonic() > deadline:
                        raise self._timed_out()
                    yield event
        except httpx.HTTPError as exc:
            raise _transport_error(exc, self.backend, self.idempotent) from exc
        except UnicodeDecodeError as exc:
            raise self._bad_body("stream is not valid UTF-8", status) from exc

    # ------------------------------------------------------------------ async

    def _aiohttp_timeout(self, deadline: float | None) -> aiohttp.ClientTimeout:
        total = None
        if deadline is not None:
            total = deadline - time.monotonic()
            if total <= 0:
                raise APITimeoutError("total timeout exhausted before the request was sent")
        # `total` covers the whole exchange, body or stream included: the deadline is exact.
        return aiohttp.ClientTimeout(
            total=total, sock_connect=self.timeouts.connect, sock_read=self.timeouts.read
        )

    def _aiohttp_kwargs(self, req: Request, deadline: float | None, stream: bool) -> dict[str, Any]:
        body = None
        if req.json is not None:
            headers = self._json_stream_headers if stream else self._json_headers
            body = json.dumps(req.json, ensure_ascii=False, separators=(",", ":")).encode()
        else:
            headers = self._stream_headers if stream else self._headers
        return {
            "method": req.method,
            "url": self.base_url + req.path,
            "params": req.params,
            "data": body,
            "headers": headers,
            "timeout": self._aiohttp_timeout(deadline),
            "proxy": self._aiohttp_proxy,
        }

    async def _aread(
        self, status: int, headers: Mapping[str, str], chunks: AsyncIterator[bytes]
    ) -> bytes:
        """Async twin of :meth:`_read` (httpx's ``aiter_bytes`` or aiohttp's ``iter_any``)."""
        body = _CappedBody(self, status, headers)
        async for chunk in chunks:
            if body.feed(chunk):
                break
        return body.result()

    async def arequest_json(self, req: Request, *, deadline: float | None = None) -> Any:
        """Async twin of :meth:`request_json`; the total deadline is exact here."""
        client = self._async_client()
        try:
            if isinstance(client, aiohttp.ClientSession):
                async with client.request(**self._aiohttp_kwargs(req, deadline, False)) as resp:
                    body = await self._aread(resp.status, resp.headers, resp.content.iter_any())
                    return self._decode_json(resp.status, resp.headers, body)
            if deadline is None:
                response, body = await self._ahttpx_request(client, req, deadline)
            else:
                async with asyncio.timeout(max(deadline - time.monotonic(), 0)):
                    response, body = await self._ahttpx_request(client, req, deadline)
        except _TRANSPORT_ERRORS as exc:
            raise _transport_error(exc, self.backend, self.idempotent) from exc
        return self._decode_json(response.status_code, response.headers, body)

    async def _ahttpx_request(
        self, client: httpx.AsyncClient, req: Request, deadline: float | None
    ) -> tuple[httpx.Response, bytes]:
        request = client.build_request(**self._build(req, deadline, False))
        response = await client.send(request, stream=True)
        try:
            body = await self._aread(response.status_code, response.headers, response.aiter_bytes())
            return response, body
        finally:
            await response.aclose()

    @asynccontextmanager
    async def asse(
        self, req: Request, *, deadline: float | None = None
    ) -> AsyncIterator[AsyncIterator[tuple[str, str]]]:
        """Async twin of :meth:`sse`."""
        client = self._async_client()
        if isinstance(client, aiohttp.ClientSession):
            async with self._asse_aiohttp(client, req, deadline) as events:
                yield events
            return
        try:
            response = await client.send(
                client.build_request(**self._build(req, deadline, True)),
                stream=True,
            )
        except httpx.HTTPError as exc:
            raise _transport_error(exc, self.backend, self.idempotent) from exc
        try:
            status = response.status_code
            if status >= 400:
                try:
                    body = await self._aread(
                        response.status_code, response.headers, response.aiter_bytes()
                    )
                except httpx.HTTPError as exc:
                    raise _transport_error(exc, self.backend, self.idempotent) from exc
                raise self._error(status, response.headers, body)
            content_type = response.headers.get("content-type", "")
            if "text/event-stream" not in content_type:
                raise self._not_a_stream(status, content_type)
            yield self._aiter_httpx_events(response, deadline)
        finally:
            await response.aclose()

    async def _aiter_httpx_events(
        self, response: httpx.Response, deadline: float | None
    ) -> AsyncIterator[tuple[str, str]]:
        status = response.status_code
        feed = _SSEParser(self.max_event_bytes, lambda: self._event_too_large(status)).feed
        chunks = response.aiter_bytes()
        try:
            async for chunk in chunks:
                for event in feed(chunk):
                    if deadline is not None and time.monotonic() > deadline:
                        raise self._timed_out()
                    yield event
        except httpx.HTTPError as exc:
            raise _transport_error(exc, self.backend, self.idempotent) from exc
        except UnicodeDecodeError as exc:
            raise self._bad_body("stream is not valid UTF-8", status) from exc
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]

    @asynccontextmanager
    async def _asse_aiohttp(
        self, session: aiohttp.ClientSession, req: Request, deadline: float | None
    ) -> AsyncIterator[AsyncIterator[tuple[str, str]]]:
        try:
            resp = await session.request(**self._aiohttp_kwargs(req, deadline, True))
        except _TRANSPORT_ERRORS as exc:
            raise _transport_error(exc, self.backend, self.idempotent) from exc
        try:
            if resp.status >= 400:
                try:
                    body = await self._aread(resp.status, resp.headers, resp.content.iter_any())
                except _TRANSPORT_ERRORS as exc:
                    raise _transport_error(exc, self.backend, self.idempotent) from exc
                raise self._error(resp.status, resp.headers, body)
            content_type = resp.headers.get("content-type", "")
            if "text/event-stream" not in content_type:
                raise self._not_a_stream(resp.status, content_type)
            yield self._aiter_aiohttp_events(resp)
        finally:
            resp.release()

    async def _aiter_aiohttp_events(
        self, resp: aiohttp.ClientResponse
    ) -> AsyncIterator[tuple[str, str]]:
        status = resp.status
        feed = _SSEParser(self.max_event_bytes, lambda: self._event_too_large(status)).feed
        try:
            async for chunk in resp.content.iter_any():
                for event in feed(chunk):
                    yield event
        except _TRANSPORT_ERRORS as exc:
            raise _transport_error(exc, self.backend, self.idempotent) from exc
        except UnicodeDecodeError as exc:
            raise self._bad_body("stream is not valid UTF-8", status) from exc


def _env_proxy_for(url: str) -> str | None:
    """The proxy that ``HTTP(S)_PROXY`` / ``ALL_PROXY`` / ``NO_PROXY`` set for ``url``."""
    parts = urlsplit(url)
    proxies = getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or proxy_bypass(parts.netloc):
        return None
    return proxy


async def _close_at_shutdown(closer: Callable[[], Awaitable[None]]) -> None:
    try:
        await asyncio.Event().wait()
    finally:
        await closer()
