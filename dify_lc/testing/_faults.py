"""Declarative fault specs applied by the fake servers.

A `Fault` describes how ONE generate request (Dify: chat-messages, completion-messages,
workflows/run; relay: chat/completions) goes wrong. Servers consume faults in FIFO order from
`server.enqueue(...)`, falling back to `server.set_default(...)` when the queue is empty.

Phases, in the order a server applies them:

1. Transport, before authentication and validation (a proxy or a busy server answers first):
   `delay` (seconds before anything else), `hang` (read the request, never answer),
   `reset_after=0` (abort the TCP connection with no response) and `status` (an HTTP error).
2. Generation, on a valid request: `first_token_delay`, `chunk_delay`, `pings`, and the
   mid-stream faults `inband_error_after`, `truncate_after`, `reset_after` (N >= 1),
   `invalid_json`, `invalid_utf8`, `oversized`, `workflow_failed` and `tool_call`.

Blocking requests honour `delay`, `hang`, `status`, `reset_after` (0: reset before any byte;
N >= 1: headers and a partial body, then a reset), `invalid_json` (a truncated body),
`invalid_utf8` and `oversized` (the whole body spoiled like the first event of a stream),
`inband_error_after` (Dify: HTTP 400 `completion_request_error` like the real server; relay:
HTTP 429 `throttling_error`), `workflow_failed`, and the timing fields: a blocking answer is
sent after `first_token_delay + chunk_delay * (chunks - 1)`, as long as the stream would take.
`truncate_after` and `pings` have no blocking meaning and are ignored there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = ["Fault", "FaultKind", "RetryAfterHeader"]

FaultKind = Literal["rate_limited", "server_error", "html", "concurrency_limit"]
RetryAfterHeader = Literal["retry-after", "retry-after-ms", "llm_provider-retry-after"]

_HTML_TEMPLATE = (
    "<html>\r\n<head><title>{code} {phrase}</title></head>\r\n<body>\r\n"
    "<center><h1>{code} {phrase}</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
# nginx's spelling, which is what sits in front of most Dify deployments.
_HTML_PHRASES = {
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Temporarily Unavailable",
    504: "Gateway Time-out",
    429: "Too Many Requests",
}


@dataclass(frozen=True, slots=True)
class Fault:
    """How one generate request fails. Every field is optional; `Fault()` changes nothing.

    Attributes:
        status: answer with this HTTP status instead of generating. The body is `body` when
            given, else the server's own error body for that status (Dify: standard shape
            `{"code", "message", "status"}` + `\\n`, shape E for >= 500; relay: LiteLLM's
            `{"error": {"message", "type", "param", "code": "<status>"}}`).
        body: exact error body bytes (only with `status`).
        headers: extra response headers (only with `status`); a `Content-Type` here wins.
        kind: set by the helper constructors; picks the server-specific default body.
        hang: read the request and never answer, until the client gives up or the server stops.
        delay: seconds to wait before the response headers (and before authentication).
        first_token_delay: seconds between the response headers and the first content event;
            overrides the server default.
        chunk_delay: seconds between content events; overrides the server default.
        pings: keep-alive frames sent before the first token, spread evenly over
            `first_token_delay` (all at once when it is 0): Dify's `event: ping\n\n`, the
            relay's SSE comment `: PING\n\n`.
        inband_error_after: after N content events send the in-band error (Dify
            `data: {"event": "error", ...}`; relay `data: {"error": {...}}`) and end the body.
        truncate_after: after N content events end the body cleanly, with no terminal event.
        reset_after: after N content events abort the TCP connection (no chunked terminator);
            0 aborts before any response byte.
        workflow_failed: Dify workflow apps: HTTP 200 with `status: "failed"`, `error: "boom"`
            (advanced-chat streams also get the `error` event; blocking gets HTTP 400).
        invalid_json: send a body / the first SSE `data:` payload as truncated, invalid JSON.
        invalid_utf8: put the bytes `0xFF 0xFE` (never valid UTF-8) in a string of the body / of
            the first SSE `data:` payload (an extra `"invalid"` field; the JSON stays valid).
        oversized: pad the body / the first SSE event to this many bytes with an extra
            `"padding"` field (the JSON stays valid: only a client-side size cap rejects it).
        tool_call: relay only: answer with a call to the first tool even without the trigger
            word "tool" in the last user message.
    """

    status: int | None = None
    body: bytes | None = None
    headers: Mapping[str, str] | None = None
    kind: FaultKind | None = None
    hang: bool = False
    delay: float = 0.0
    first_token_delay: float | None = None
    chunk_delay: float | None = None
    pings: int = 0
    inband_error_after: int | None = None
    truncate_after: int | None = None
    reset_after: int | None = None
    workflow_failed: bool = False
    invalid_json: bool = False
    invalid_utf8: bool = False
    oversized: int | None = None
    tool_call: bool = False

    @classmethod
    def rate_limited(
        cls, retry_after: str | None = None, header: RetryAfterHeader = "retry-after"
    ) -> Fault:
        """HTTP 429 with the server's throttling body, and `header: retry_after` when given.

        Dify: `{"code": "too_many_requests", "message": "Too many requests.", "status": 429}`
        (the real Dify never sends a wait hint: a `retry_after` models a proxy in front).
        Relay: LiteLLM's `throttling_error`; with `header="llm_provider-retry-after"` the router's
        rpm-limit message (peers/litellm/07), otherwise the relayed provider 429 (09).
        """
        headers: dict[str, str] = {header: retry_after} if retry_after is not None else {}
        return cls(status=429, kind="rate_limited", headers=headers)

    @classmethod
    def server_error(cls, status: int = 500) -> Fault:
        """A JSON 5xx: Dify `{"message": "Internal Server Error", "code": "unknown"}\\n`
        (shape E), relay `{"error": {..., "type": "internal_server_error", "code": "500"}}`."""
        return cls(status=status, kind="server_error")

    @classmethod
    def html(cls, status: int = 504) -> Fault:
        """An nginx-style HTML error page (`text/html`), as a gateway in front would send."""
        phrase = _HTML_PHRASES.get(status, "Error")
        body = _HTML_TEMPLATE.format(code=status, phrase=phrase).encode()
        return cls(status=status, body=body, headers={"Content-Type": "text/html"}, kind="html")

    @classmethod
    def dify_concurrency_limit(cls, limit: int = 1) -> Fault:
        """Dify 0.14.2+'s app concurrency limit: HTTP 400 `invalid_param` "Too many requests..."."""
        body = (
            '{"code": "invalid_param", "message": "Too many requests. Please try again later. '
            f'The current maximum concurrent requests allowed is {limit}.", "status": 400}}\n'
        ).encode()
        return cls(status=400, body=body, kind="concurrency_limit")
