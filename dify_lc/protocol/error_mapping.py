"""Turn HTTP error responses and in-band stream errors into typed errors (sans-I/O).

Tolerant by design (PROTOCOL.md §7, §10, §11.5): Dify error bodies come in several shapes
(``code``/``message``/``status``; reqparse ``params`` without ``status``; restx ``errors`` without
``code``), relays put ``{"error": {...}}`` with a string, int, empty or missing ``code``, proxies
answer with HTML or an empty body. We match on status and code, never on message text, except
Dify's "Too many requests" prefix, which is the only way to recognise its concurrency limit.
"""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

import httpx

from dify_lc.errors import (
    AuthenticationError,
    BackendConfigError,
    BadRequestError,
    DifyLCError,
    InBandStreamError,
    NotFoundError,
    RateLimitError,
    ServerError,
)

__all__ = ["error_from_response", "inband_error", "parse_retry_after", "scrub"]

# Dify codes that mean "this backend cannot serve the app": another backend may.
_BACKEND_CONFIG_CODES = frozenset(
    {
        "provider_not_initialize",
        "provider_quota_exceeded",
        "model_currently_not_support",
        "app_unavailable",
        "not_chat_app",
        "not_completion_app",
        "not_workflow_app",
    }
)
_TITLE = re.compile(rb"<title>\s*(.*?)\s*</title>", re.IGNORECASE | re.DOTALL)
_MAX_MESSAGE = 2000


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of a secret in ``text`` with ``***``."""
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, "***")
    return text


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait as advised by the server, or ``None``.

    Order (openai-python's, PROTOCOL.md §10): ``retry-after-ms`` (float ms), ``retry-after``
    (seconds, may be a float, or an HTTP-date), ``llm_provider-retry-after`` (LiteLLM, seconds).
    Negative or unparsable values are ignored.
    """
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            ms = float(value)
        except ValueError:
            ms = -1.0
        if ms >= 0:
            return ms / 1000.0
    for name in ("retry-after", "llm_provider-retry-after"):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError, IndexError):
                continue
            if when is None:
                continue
            seconds = when.timestamp() - (time.time() if now is None else now)
            seconds = max(seconds, 0.0)
        if seconds >= 0:
            return seconds
    return None


def _message_and_code(status: int, body: bytes, content_type: str) -> tuple[str, str | None, Any]:
    """Best-effort (message, code, parsed body) from any error body."""
    text = body.strip()
    if not text:
        return f"HTTP {status} with an empty body", None, None
    if text[:1] in (b"{", b"["):
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            err = data.get("error")
            if isinstance(err, dict):  # OpenAI-compatible relay
                code = err.get("code")
                etype = err.get("type")
                # LiteLLM's code is just the status as a string: the type says more.
                if code in (None, "", str(status), status) and etype:
                    code = etype
                return str(err.get("message") or f"HTTP {status}"), _str_or_none(code), data
            if isinstance(err, str):
                return err, _str_or_none(data.get("code") or data.get("type")), data
            message = data.get("message")
            errors = data.get("errors")
            if isinstance(errors, dict) and errors:  # flask-restx shape C: no code
                details = "; ".join(f"{k}: {v}" for k, v in errors.items())
                message = f"{message}: {details}" if message else details
            elif data.get("params") and message:  # reqparse shape B: names the parameter
                message = f"{message} ({data['params']})"
            return str(message or f"HTTP {status}"), _str_or_none(data.get("code")), data
    if b"<html" in text[:512].lower() or "html" in content_type:
        match = _TITLE.search(text)
        title = match.group(1).decode("utf-8", "replace") if match else f"HTTP {status}"
        return f"{title} (HTML error page)", None, None
    return text[:_MAX_MESSAGE].decode("utf-8", "replace"), None, None


def _detached(status: int, headers: Mapping[str, str], body: bytes) -> httpx.Response:
    """A response with no request attached (so no Authorization header rides along)."""
    try:
        return httpx.Response(status, headers=headers, content=body)
    except (UnicodeEncodeError, TypeError, ValueError):
        # Non-ASCII or odd header values (seen from some proxies): keep them as UTF-8 bytes.
        items = [(str(k).encode(), str(v).encode("utf-8", "replace")) for k, v in headers.items()]
        return httpx.Response(status, headers=items, content=body)


def _str_or_none(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return str(value)


def error_from_response(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    backend: str,
    secrets: Iterable[str] = (),
) -> DifyLCError:
    """Map an HTTP error response to the typed error the policies act on."""
    content_type = headers.get("content-type", "")
    message, code, _ = _message_and_code(status, body, content_type)
    message = scrub(message[:_MAX_MESSAGE], secrets)
    response = _detached(status, headers, body)
    kwargs: dict[str, Any] = {
        "status": status,
        "code": code,
        "backend": backend,
        "response": response,
    }
    cls: type[DifyLCError]
    if status == 429 or code in ("too_many_requests", "rate_limit_error", "throttling_error"):
        cls = RateLimitError
        kwargs["retry_after"] = parse_retry_after(headers)
    elif status == 400 and code == "invalid_param" and message.startswith("Too many requests"):
        cls = RateLimitError  # Dify's concurrency limit (0.14.2+); never sends Retry-After
    elif status in (401, 403):
        cls = AuthenticationError
    elif code == "no_db_connection":
        cls = AuthenticationError  # LiteLLM without a database: an unknown key
    elif code in _BACKEND_CONFIG_CODES:
        cls = BackendConfigError
    elif code == "completion_request_error" or status in (408, 425) or status >= 500:
        cls = ServerError  # upstream model failure / timeout / server fault: try again
    elif status == 404:
        cls = NotFoundError
    elif 300 <= status < 500:
        cls = BadRequestError
    else:
        cls = ServerError
    err = cls(message, **kwargs)
    should_retry = headers.get("x-should-retry")
    if should_retry == "true":
        err.retryable = True
    elif should_retry == "false":
        err.retryable = False
    return err


def inband_error(
    data: Mapping[str, Any], *, backend: str, secrets: Iterable[str] = ()
) -> InBandStreamError:
    """An error reported inside an HTTP 200 stream (Dify ``event: error``, relay ``{"error"}``)."""
    err = data.get("error")
    if isinstance(err, dict):
        message, code, status = err.get("message"), err.get("code") or err.get("type"), None
    else:
        message, code, status = data.get("message"), data.get("code"), data.get("status")
    return InBandStreamError(
        scrub(str(message or "stream error"), secrets),
        status=status if isinstance(status, int) else None,
        code=_str_or_none(code),
        backend=backend,
    )
