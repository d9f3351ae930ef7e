"""Secrets never reach a log line: known keys, key-shaped strings and secret-named fields.

Applied at the source (every dify-lc event goes through :func:`redact_event`) and at the sink
(:func:`configure_logging <dify_lc.observability.log.configure_logging>` installs a formatter
that redacts the final text, tracebacks included), so a user who logs a request, a response
or an exception through those handlers cannot leak a key either.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections.abc import Mapping, MutableMapping
from typing import Any

from pydantic import SecretStr

__all__ = [
    "RedactingFormatter",
    "mask_secret_fields",
    "redact",
    "redact_event",
    "redact_text",
    "register_secret",
]

MASK = "***"
# Field names whose values are secrets: x-api-key, api_key, access_token, Authorization, ...
# (whole-name match, so tokens_in / max_tokens are not masked).
_SECRET_FIELDS = re.compile(
    r"(?:.*[_-])?(?:authorization|api[_-]?key|secret|password|token|cookie)", re.I
)
# Three families of secrets in free text. Each regex runs only when a cheap substring test
# says it could match: this sits on every log line, and re.sub over a whole line costs ~40 µs
# where the substring tests cost ~1 µs.
_KV = re.compile(
    r"(?i)((?:authorization|api[_-]?key|password|secret|token)[\"']?\s*[:=]\s*[\"']?"
    r"(?:bearer\s+)?)[^\s'\",}]+"
)
_KV_HINTS = (
    "authorization",
    "api_key",
    "api-key",
    "apikey",
    "password",
    "secret",
    'token"',
    "token'",
    "token=",
    "token:",
    "token =",
    "token :",
)
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s'\",}]+")
_KEYS = re.compile(r"\b(?:sk|app|dataset)-[A-Za-z0-9_\-]{8,}")
_known: tuple[str, ...] = ()  # longest first, so a key containing another is masked whole
_known_lock = threading.Lock()


def register_secret(value: str | SecretStr | None) -> None:
    """Remember a secret (e.g. an API key) so it is masked wherever it shows up."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if not value or len(value) < 6:
        return
    global _known
    with _known_lock:
        if value not in _known:
            _known = tuple(sorted((*_known, value), key=len, reverse=True))


def _keep_prefix(match: re.Match[str]) -> str:
    return match.group(1) + MASK


def redact_text(text: str) -> str:
    """Mask known secrets and key-shaped strings in ``text``."""
    for secret in _known:
        if secret in text:
            text = text.replace(secret, MASK)
    if "-" in text and ("sk-" in text or "app-" in text or "dataset-" in text):
        text = _KEYS.sub(MASK, text)
    low = text.lower()
    if "bearer" in low:
        text = _BEARER.sub(_keep_prefix, text)
        low = text.lower()
    if any(hint in low for hint in _KV_HINTS):
        text = _KV.sub(_keep_prefix, text)
    return text


def redact(value: Any, _depth: int = 0) -> Any:
    """A copy of ``value`` with secrets masked (strings, mappings, sequences, exceptions)."""
    if isinstance(value, str):
        return redact_text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, SecretStr):
        return MASK
    if _depth > 6:
        return redact_text(repr(value))
    if isinstance(value, Mapping):
        return {
            k: (
                MASK
                if isinstance(k, str) and _SECRET_FIELDS.fullmatch(k)
                else redact(v, _depth + 1)
            )
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set):
        return [redact(v, _depth + 1) for v in value]
    if isinstance(value, BaseException):
        return redact_text(f"{type(value).__name__}: {value}")
    return redact_text(str(value))


def redact_event(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: redact every field of an event."""
    return {k: (MASK if _SECRET_FIELDS.fullmatch(k) else redact(v)) for k, v in event_dict.items()}


def mask_secret_fields(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask fields named like secrets (``api_key``, ``Authorization``…).

    The cheap half of :func:`redact_event`, for chains whose output text is redacted as a
    whole afterwards (:class:`RedactingFormatter`), as :func:`configure_logging` sets up.
    """
    for key, value in event_dict.items():
        if _is_secret_field(key):
            event_dict[key] = MASK
        elif type(value) is dict:
            event_dict[key] = redact(value)
    return event_dict


@functools.lru_cache(maxsize=1024)
def _is_secret_field(name: str) -> bool:
    # Event field names repeat on every line: remember the verdict instead of re-matching.
    return _SECRET_FIELDS.fullmatch(name) is not None


class RedactingFormatter(logging.Formatter):
    """Wraps a formatter and redacts its whole output (message, extras and traceback)."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(self.inner.format(record))
