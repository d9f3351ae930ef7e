"""The typed errors every layer of dify-lc speaks.

Every failure of a call becomes a :class:`DifyLCError` subclass. Policies (retry, fallback, circuit
breaker) read the three flags, never status codes:

============================  ===========  ==============  ==================
error                         retryable    allows_fallback counts_as_failure
============================  ===========  ==============  ==================
APIConnectionError (connect)  yes          yes             yes
APITimeoutError (connect)     yes          yes             yes
APITimeoutError (read)        idempotent*  yes             yes
RateLimitError (429, Dify's   yes          yes             yes
400 "Too many requests")
ServerError (5xx, HTML pages, yes          yes             yes
Dify completion_request_error)
InBandStreamError (before     yes          yes             yes
the first token)
BadRequestError, NotFoundError no          no              no
AuthenticationError (401/403) no           yes             yes
BackendConfigError            no           yes             yes
StreamInterruptedError        no           no              yes
WorkflowRunFailedError        no           no              yes
ProtocolError (bad body)      idempotent*  yes             yes
InputError, ConfigurationError no          no              no
============================  ===========  ==============  ==================

``*`` a request that may have reached the server is retried only when the backend is
idempotent-safe: relays are stateless; a Dify generate call may have been billed and written into
the conversation, so it is retried only when the user opts in.

``str(err)`` never contains an API key: messages are built from status, code and the server's
message, and the attached ``response`` is a detached copy without the request (whose headers carry
the key).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AllRoutesFailedError",
    "Attempt",
    "AuthenticationError",
    "BackendConfigError",
    "BadRequestError",
    "BreakerOpenError",
    "ConfigurationError",
    "DifyLCError",
    "InBandStreamError",
    "InputError",
    "NotFoundError",
    "ProtocolError",
    "RateLimitError",
    "ServerError",
    "StreamInterruptedError",
    "WorkflowRunFailedError",
]


class DifyLCError(Exception):
    """Base class of every dify-lc error.

    Attributes:
        message: the server's (or our) human-readable message, shown as is.
        status: HTTP status, or the in-band ``status`` of a stream error; ``None`` when no
            response was received.
        code: the server's error code (Dify ``code``, relay ``error.code`` / ``error.type``).
        backend: name of the backend that produced the error (e.g. ``"dify"``).
        response: a detached ``httpx.Response`` (status, headers, body; no request attached),
            or ``None``. LangChain reads it to fill error metadata.
        retry_after: seconds the server asked us to wait, or ``None``.
        retryable: may the same backend be tried again for this call.
        allows_fallback: may the call move on to another backend.
        counts_as_failure: does this outcome count against the backend's circuit breaker.
    """

    retryable: bool = False
    allows_fallback: bool = False
    counts_as_failure: bool = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        backend: str | None = None,
        response: httpx.Response | None = None,
        retry_after: float | None = None,
        retryable: bool | None = None,
        allows_fallback: bool | None = None,
        counts_as_failure: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.backend = backend
        self.response = response
        self.retry_after = retry_after
        # Instance flags override the class defaults only where the context decides (idempotency).
        if retryable is not None:
            self.retryable = retryable
        if allows_fallback is not None:
            self.allows_fallback = allows_fallback
        if counts_as_failure is not None:
            self.counts_as_failure = counts_as_failure

    def __str__(self) -> str:
        parts = []
        if self.backend:
            parts.append(f"[{self.backend}]")
        if self.status is not None:
            parts.append(str(self.status))
        if self.code:
            parts.append(str(self.code))
        head = " ".join(parts)
        return f"{head}: {self.message}" if head else self.message

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(message={self.message!r}, status={self.status!r}, "
            f"code={self.code!r}, backend={self.backend!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep errors picklable (multiprocessing, LangChain tracing) without the response.
        state = {k: v for k, v in self.__dict__.items() if k != "response"}
        return (_rebuild, (type(self), self.message, state))


def _rebuild(cls: type[DifyLCError], message: str, state: dict[str, Any]) -> DifyLCError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    err.response = None
    return err


class InputError(DifyLCError, ValueError):
    """The call's input is invalid; raised before any network call."""


class ConfigurationError(DifyLCError, ValueError):
    """The model is misconfigured (e.g. no API key); raised before any network call."""


class APIStatusError(DifyLCError):
    """The server answered with an HTTP error status."""


class BadRequestError(APIStatusError):
    """400 (other than a rate limit), 405, 413, 415, 422: the request is wrong everywhere."""


class NotFoundError(BadRequestError):
    """404: unknown conversation, message or route."""


class AuthenticationError(APIStatusError):
    """401 / 403: bad or missing key, disabled app. This backend is misconfigured."""

    allows_fallback = True
    counts_as_failure = True


class BackendConfigError(APIStatusError):
    """The backend cannot serve the app (quota exceeded, provider not set up, app unavailable)."""

    allows_fallback = True
    counts_as_failure = True


class RateLimitError(APIStatusError):
    """429, or Dify's 400 ``invalid_param`` "Too many requests…" concurrency limit.

    ``retry_after`` holds the server's advice in seconds, from ``retry-after-ms``,
    ``retry-after`` (seconds or HTTP-date) or ``llm_provider-retry-after``, in that order;
    ``None`` when the server gave none (Dify never does).
    """

    retryable = True
    allows_fallback = True
    counts_as_failure = True


class ServerError(APIStatusError):
    """5xx, an HTML error page from a proxy, or an upstream model failure reported by Dify."""

    retryable = True
    allows_fallback = True
    counts_as_failure = True


class APIConnectionError(DifyLCError):
    """The connection failed (refused, DNS, reset) before a response arrived.

    ``request_sent`` tells whether the request may have reached the server; if so it is retried
    only on idempotent-safe backends.
    """

    allows_fallback = True
    counts_as_failure = True

    def __init__(self, message: str, *, request_sent: bool = False, **kwargs: Any) -> None:
        kwargs.setdefault("retryable", not request_sent)
        super().__init__(message, **kwargs)
        self.request_sent = request_sent


class APITimeoutError(APIConnectionError, TimeoutError):
    """Connect, read or total timeout before the first byte of the answer."""


class ProtocolError(DifyLCError):
    """The server's answer could not be understood (invalid JSON, invalid UTF-8, cut-off stream)."""

    allows_fallback = True
    counts_as_failure = True


class InBandStreamError(DifyLCError):
    """An ``error`` event inside an HTTP 200 stream, before any content token was yielded."""

    retryable = True
    allows_fallback = True
    counts_as_failure = True


class StreamInterruptedError(DifyLCError):
    """A stream failed after content had been yielded to the caller.

    Never retried or sent to another backend (that would duplicate text the caller already has).
    ``partial_text`` holds what was yielded; ``__cause__`` the underlying error.
    """

    counts_as_failure = True

    def __init__(self, message: str, *, partial_text: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.partial_text = partial_text


class WorkflowRunFailedError(DifyLCError):
    """A Dify workflow run ended with ``status: failed`` (reported inside HTTP 200).

    ``outputs`` holds whatever the run produced; a failed run may have had side effects, so it
    is never retried automatically.
    """

    counts_as_failure = True

    def __init__(
        self, message: str, *, outputs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(message, **kwargs)
        self.outputs = outputs or {}


class BreakerOpenError(DifyLCError):
    """The backend's circuit breaker is open (or its half-open probes are taken): not called."""

    allows_fallback = True


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt of a resilient call: which route, what went wrong, how long it took."""

    route: str
    backend: str | None
    error: BaseException
    elapsed: float

    @property
    def error_type(self) -> str:
        return type(self.error).__name__

    def __str__(self) -> str:
        return f"{self.route}: {self.error_type} after {self.elapsed:.3f}s: {self.error}"


class AllRoutesFailedError(DifyLCError):
    """Every route failed, was skipped (breaker open) or the deadline ran out.

    ``attempts`` lists every attempt in order (route, backend, error, elapsed seconds); the
    last error is also the ``__cause__``.
    """

    def __init__(self, message: str, *, attempts: list[Attempt], **kwargs: Any) -> None:
        lines = "; ".join(str(a) for a in attempts) or "no route could be tried"
        super().__init__(f"{message}: {lines}", **kwargs)
        self.attempts = attempts
