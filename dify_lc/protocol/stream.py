"""What every stream parser shares: the text yielded so far and the commit rule."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dify_lc.errors import DifyLCError, StreamInterruptedError

__all__ = ["StreamState"]


class StreamState:
    """Base of the stream state machines.

    A stream is *committed* once a content token has been produced: from then on a failure is
    a :class:`StreamInterruptedError` carrying the partial text, never a retry or a fallback
    (which would duplicate text the caller already has).
    """

    __slots__ = ("_parts", "backend", "ended", "secrets")

    def __init__(self, *, backend: str, secrets: Iterable[str] = ()) -> None:
        self.backend = backend
        self.secrets = tuple(secrets)
        self.ended = False
        self._parts: list[str] = []

    @property
    def text(self) -> str:
        """The answer text produced so far."""
        return "".join(self._parts)

    @property
    def has_content(self) -> bool:
        """True once the stream is committed."""
        return bool(self._parts)

    def feed(self, event: str, data: str) -> Any:
        """Consume one SSE event; return what it means for the caller, or ``None``."""
        raise NotImplementedError

    def finish(self) -> None:
        """Call at end of body; raise when the stream was cut off."""
        raise NotImplementedError

    def fail(self, error: DifyLCError) -> DifyLCError:
        """The error to raise for a failure now."""
        if not self.has_content or isinstance(error, StreamInterruptedError):
            return error
        partial = self.text
        interrupted = StreamInterruptedError(
            f"stream interrupted after {len(partial)} characters: {error}",
            partial_text=partial,
            status=error.status,
            code=error.code,
            backend=self.backend,
        )
        interrupted.__cause__ = error
        return interrupted
