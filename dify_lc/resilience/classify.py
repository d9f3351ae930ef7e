"""Map any exception a route raises to the typed vocabulary the policies read.

Our own models already raise :class:`~dify_lc.errors.DifyLCError`. Third-party chat models
(``ChatOpenAI``, ``ChatAnthropic``, …) raise their SDK's errors; they are recognised by shape
(an HTTP ``status_code`` and ``response``, or a well-known class name) without importing the
SDKs, and wrapped with the original as ``__cause__``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from dify_lc.errors import (
    APIConnectionError,
    APITimeoutError,
    BadRequestError,
    DifyLCError,
    ServerError,
)
from dify_lc.protocol.error_mapping import error_from_response

__all__ = ["classify", "is_cancellation"]

_TIMEOUT_NAMES = frozenset({"APITimeoutError", "Timeout", "TimeoutException", "ReadTimeout"})
_CONNECTION_NAMES = frozenset({"APIConnectionError", "ConnectError", "ConnectionError"})


def is_cancellation(exc: BaseException) -> bool:
    """The caller gave up (cancelled, interrupted, closed the stream): never a backend failure."""
    return isinstance(exc, asyncio.CancelledError | GeneratorExit | KeyboardInterrupt | SystemExit)


def classify(exc: BaseException, *, backend: str, idempotent: bool = True) -> DifyLCError:
    """Our typed error for ``exc`` (``exc`` itself when it already is one)."""
    if isinstance(exc, DifyLCError):
        return exc
    names = {cls.__name__ for cls in type(exc).__mro__}
    status = getattr(exc, "status_code", None)
    response = getattr(exc, "response", None)
    err: DifyLCError
    if isinstance(status, int):
        headers: Any = getattr(response, "headers", {}) or {}
        body = b""
        if isinstance(response, httpx.Response):
            try:
                body = response.content
            except httpx.ResponseNotRead:
                body = b""
        err = error_from_response(status, headers, body, backend=backend)
        if not err.message or err.message.startswith("HTTP "):
            err.message = str(exc)
    elif names & _TIMEOUT_NAMES or isinstance(exc, TimeoutError):
        err = APITimeoutError(
            str(exc) or "timeout", request_sent=True, retryable=idempotent, backend=backend
        )
    elif names & _CONNECTION_NAMES or isinstance(exc, ConnectionError | httpx.TransportError):
        err = APIConnectionError(
            str(exc) or "connection error", request_sent=True, retryable=idempotent, backend=backend
        )
    elif isinstance(exc, ValueError | TypeError | KeyError | AttributeError):
        # Bad input or a bug: the same call fails on every backend.
        err = BadRequestError(f"{type(exc).__name__}: {exc}", backend=backend)
    else:
        # Unknown failure of a backend: do not retry blindly, but let another backend try.
        err = ServerError(f"{type(exc).__name__}: {exc}", backend=backend, retryable=False)
    err.__cause__ = exc
    return err
