"""Retry decisions: capped exponential backoff with full jitter, honouring the server's advice."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from dify_lc.errors import DifyLCError

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When and how long to wait before trying the same backend again.

    Only errors whose ``retryable`` flag is set are retried (see :mod:`dify_lc.errors`); a
    stream that already yielded text never is. The wait before retry ``n`` (0-based) is

    - the server's advice (``retry-after-ms`` / ``retry-after`` / ``llm_provider-retry-after``)
      when it gave one and it is at most ``max_retry_after`` (otherwise: do not retry, so the
      caller can fall back instead of sleeping);
    - else full jitter (AWS architecture blog, "Exponential Backoff and Jitter"):
      ``U(0, min(max_wait, initial * multiplier ** n))``.

    No wait may end past the call's deadline: then the answer is "do not retry".

    Attributes:
        max_retries: retries after the first attempt (default 2, as openai-python).
        initial: base of the backoff in seconds (default 0.5).
        multiplier: growth per retry (default 2).
        max_wait: cap of one backoff wait (default 8 s).
        max_retry_after: longest server-advised wait we honour (default 60 s).
    """

    max_retries: int = 2
    initial: float = 0.5
    multiplier: float = 2.0
    max_wait: float = 8.0
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if self.initial < 0 or self.max_wait < 0 or self.max_retry_after < 0:
            raise ValueError("waits must be >= 0")

    def backoff(self, retry: int, rand: Callable[[], float] = random.random) -> float:
        """The jittered wait before retry number ``retry`` (0-based) with no server advice."""
        return rand() * min(self.max_wait, self.initial * self.multiplier**retry)

    def next_delay(
        self,
        error: BaseException,
        retry: int,
        *,
        now: float,
        deadline: float | None,
        rand: Callable[[], float] = random.random,
    ) -> float | None:
        """Seconds to wait before retry number ``retry`` (0-based), or ``None``: do not retry."""
        if not isinstance(error, DifyLCError) or not error.retryable:
            return None
        if retry >= self.max_retries:
            return None
        if error.retry_after is not None:
            if error.retry_after > self.max_retry_after:
                return None
            delay = error.retry_after
        else:
            delay = self.backoff(retry, rand)
        if deadline is not None and now + delay >= deadline:
            return None
        return delay
