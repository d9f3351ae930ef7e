"""One request budget for many processes: a Redis-backed LangChain ``BaseRateLimiter``.

The counting is the ``limits`` library's (a moving window kept by one Lua script in Redis, so
processes cannot both take the last slot). This module adds what LangChain's interface needs:
blocking and async acquisition, waiting until the window frees a slot, and falling back to a
local limiter (logged once) while Redis is unreachable, so calls keep flowing.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from typing import TYPE_CHECKING, Any

from langchain_core.rate_limiters import BaseRateLimiter

from dify_lc.errors import ConfigurationError
from dify_lc.resilience.shared import RedisHealth, redis_errors

if TYPE_CHECKING:
    from redis import Redis

__all__ = ["RedisRateLimiter"]


def _item(requests_per_second: float) -> Any:
    """The budget in ``limits``' terms: whole requests per whole seconds, never above the rate
    and never a burst larger than one second's worth (9.9/s is 9 per second, not 99 per 10 s;
    0.4/s is one per 3 s)."""
    from limits import RateLimitItemPerSecond

    if not requests_per_second > 0:
        raise ConfigurationError("requests_per_second must be positive")
    if requests_per_second >= 1:
        return RateLimitItemPerSecond(math.floor(requests_per_second), 1)
    return RateLimitItemPerSecond(1, math.ceil(1 / requests_per_second))


class RedisRateLimiter(BaseRateLimiter):
    """A request rate shared by every process that uses the same Redis and ``key``.

    Args:
        redis: a ``redis.Redis`` client or a URL (keep a password in the environment).
        requests_per_second: the shared budget, counted in whole requests per whole seconds
            and rounded down (9.9 → 9 per second; 0.4 → one per 3 s).
        key: names the budget; processes with the same key share it.
        max_wait: seconds ``acquire(blocking=True)`` waits at most between two tries.
        fallback_rate: the per-process rate used while Redis is unreachable (default: the
            shared rate, so each process alone stays within it; set ``rate / processes`` to
            stay within it together).
        retry_interval: seconds between attempts to reach Redis once it failed.

    Use it as any LangChain rate limiter: ``ChatDify(..., rate_limiter=limiter)`` or on the
    :class:`~dify_lc.ResilientChatModel` (one budget for the whole call).
    """

    def __init__(
        self,
        redis: Redis | str,
        *,
        requests_per_second: float,
        key: str = "dify-lc",
        max_wait: float = 0.1,
        fallback_rate: float | None = None,
        retry_interval: float = 5.0,
    ) -> None:
        try:
            from limits.storage import MemoryStorage, RedisStorage
            from limits.strategies import MovingWindowRateLimiter
        except ImportError:  # pragma: no cover - depends on the install
            raise ConfigurationError(
                "RedisRateLimiter needs limits and redis: pip install 'dify-lc[redis]'"
            ) from None
        from dify_lc.resilience.shared import connect

        client = connect(redis) if isinstance(redis, str) else redis
        self._item = _item(requests_per_second)
        self._local_item = _item(fallback_rate or requests_per_second)
        self._key = key
        self._max_wait = max_wait
        # limits takes a URL but uses the connection pool it is given, so both share a client.
        storage = RedisStorage("redis://", connection_pool=client.connection_pool)
        self._shared = MovingWindowRateLimiter(storage)
        self._local = MovingWindowRateLimiter(MemoryStorage())
        self._health = RedisHealth({"limiter": key}, "local rate limit", retry_interval)

    def __repr__(self) -> str:
        return f"RedisRateLimiter(key={self._key!r}, rate={self._item})"

    # One core for sync and async: try once, and say how long to wait before the next try.
    def _try(self) -> tuple[bool, float]:
        health = self._health
        if health.usable():
            try:
                if self._shared.hit(self._item, self._key):
                    health.ok()
                    return True, 0.0
                reset = self._shared.get_window_stats(self._item, self._key).reset_time
                health.ok()
                return False, self._wait(reset)
            except redis_errors() as exc:
                health.failed(exc)
        if self._local.hit(self._local_item, self._key):
            return True, 0.0
        reset = self._local.get_window_stats(self._local_item, self._key).reset_time
        return False, self._wait(reset)

    def _wait(self, reset_time: float) -> float:
        # Until the window frees a slot, capped, plus jitter so waiting processes do not all
        # come back in the same millisecond.
        wait = min(max(reset_time - time.time(), 0.0), self._max_wait)
        return wait + random.uniform(0.0, 0.005)

    def acquire(self, *, blocking: bool = True) -> bool:
        """Take one request from the budget; with ``blocking``, wait until one is free."""
        while True:
            ok, wait = self._try()
            if ok or not blocking:
                return ok
            time.sleep(wait)

    async def aacquire(self, *, blocking: bool = True) -> bool:
        """Async :meth:`acquire`: the Redis round trip runs in a worker thread."""
        while True:
            ok, wait = await asyncio.to_thread(self._try)
            if ok or not blocking:
                return ok
            await asyncio.sleep(wait)
