"""Secrets never reach a log line: known keys, key-shaped strings and secret-named fields.

Applied at the source (every dify-lc event goes through :func:`redact_event`) and at the sink
(:func:`configure_logging <dify_lc.observability.log.configure_logging>` installs a formatter
that redacts the final text, tracebacks included), so a user who logs a request, a response
or an exception through those handlers cannot leak a key either.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping, MutableMapping
from typing import Any

from pydantic import SecretStr

__all__ = ["RedactingFormatter", "redact", "redact_event", "redact_text", "register_secret"]

MASK = "***"
# Field names whose values are secrets: x-api-key, api_key, access_token, Authorization, ...
# (whole-name match, so tokens_in / max_tokens are not masked).
_SECRET_FIELDS = re.compile(
    r"(?:.*[_-])?(?:authorization|api[_-]?key|secret|password|token|cookie)", re.I
)
# `api_key=...` / `"Authorization": "..."` in free text, Bearer tokens, sk-/app-/dataset- keys.
_PATTERNS = re.compile(
    r"(?i)((?:authorization|api[_-]?key|password|secret|token)[\"']?\s*[:=]\s*[\"']?"
    r"(?:bearer\s+)?)[^\s'\",}]+"
    r"|(bearer\s+)[^\s'\",}]+"
    r"|\b(?:sk|app|dataset)-[A-Za-z0-9_\-]{8,}"
)
_known: set[str] = set()
_known_lock = threading.Lock()
_known_re: re.Pattern[str] | None = None


def register_secret(value: str | SecretStr | None) -> None:
    """Remember a secret (e.g. an API key) so it is masked wherever it shows up."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if not value or len(value) < 6:
        return
    global _known_re
    with _known_lock:
        if value in _known:
            return
        _known.add(value)
        _known_re = re.compile(
            "|".join(re.escape(s) for s in sorted(_known, key=len, reverse=True))
        )


def redact_text(text: str) -> str:
    """Mask known secrets and key-shaped strings in ``text``."""
    known = _known_re
    if known is not None:
        text = known.sub(MASK, text)
    return _PATTERNS.sub(lambda m: (m.group(1) or m.group(2) or "") + MASK, text)


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


class RedactingFormatter(logging.Formatter):
    """Wraps a formatter and redacts its whole output (message, extras and traceback)."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(self.inner.format(record))
