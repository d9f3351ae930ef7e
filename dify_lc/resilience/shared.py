"""Breaker state shared by many processes through Redis, and the half-open probe claim.

:class:`SharedStorage` is pybreaker's ``CircuitRedisStorage`` (same keys, one namespace per
backend, so plain pybreaker processes interoperate) with three changes a hot path needs:

* Reads come from a local copy no older than ``refresh`` seconds (one ``MGET`` renews it), so
  a call pays no Redis round trip; writes (a failure, a state change) go to Redis at once.
  A trip in one process is seen by every other within ``refresh``.
* While Redis is unreachable the local copy *is* the breaker: calls keep being served on local
  state, one ``redis.unavailable`` warning is logged, and Redis is tried again every
  ``retry_interval`` seconds (``redis.recovered`` when it answers). pybreaker's own storage
  would instead report "closed" with a zero counter, so a breaker could never open.
* :func:`claim_probe` lets exactly ``limit`` processes probe a half-open backend: each slot is
  one ``SET NX PX`` (atomic in Redis, not read-then-write), keyed by the time the breaker
  opened, so a slot cannot be claimed twice in one open period. A claim lapses after its TTL,
  so a process that dies mid-probe does not block recovery for longer.
"""

from __future__ import annotations

import functools
import logging
import secrets
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, cast

import pybreaker

from dify_lc.errors import ConfigurationError
from dify_lc.observability.log import emit
from dify_lc.observability.redaction import register_secret

if TYPE_CHECKING:
    from redis import Redis

__all__ = [
    "LOCAL",
    "RedisHealth",
    "SharedStorage",
    "claim_probe",
    "connect",
    "redis_errors",
    "release_probe",
    "shared_breaker",
]

LOCAL: Final = "local"  # claim_probe's answer when Redis cannot decide: count probes locally

# pybreaker keeps opened_at in whole seconds; with a 1 s reset_timeout that lets a process
# probe up to a second early, so the milliseconds go in a key of our own next to it.
_SET_IF_GREATER = """
local current = redis.call('GET', KEYS[2])
if not current or tonumber(ARGV[2]) > tonumber(current) then
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('SET', KEYS[2], ARGV[2])
end
"""
_DELETE_IF_OWNED = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@functools.cache
def redis_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "Redis is not answering" (redis-py's, plus OSError)."""
    from redis.exceptions import RedisError

    return (RedisError, OSError)


def connect(url: str, *, timeout: float = 0.25) -> Redis:
    """A ``redis.Redis`` client for ``url`` with short socket timeouts.

    A Redis that stops answering must cost a call at most ``timeout`` (then the library works
    on local state for a while), never hang it; redis-py's default is no timeout at all.
    """
    try:
        import redis
    except ImportError:  # pragma: no cover - depends on the install
        raise ConfigurationError(
            "shared state needs the redis client: pip install 'dify-lc[redis]'"
        ) from None
    from urllib.parse import urlsplit

    register_secret(urlsplit(url).password)  # never shown in an event or error text
    return redis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=30
    )


class RedisHealth:
    """Is Redis answering? After a failure it is left alone for ``retry_interval`` seconds;
    the first failure of an outage and the recovery are each logged once."""

    __slots__ = ("_clock", "_labels", "_retry_interval", "_serving_on", "down", "down_until")

    def __init__(
        self,
        labels: dict[str, str],
        serving_on: str,
        retry_interval: float,
        clock: Any = time.monotonic,
    ) -> None:
        self._labels = labels
        self._serving_on = serving_on
        self._retry_interval = retry_interval
        self._clock = clock
        self.down = False
        self.down_until = 0.0

    def usable(self) -> bool:
        """Worth trying Redis now?"""
        return not self.down or self._clock() >= self.down_until

    def failed(self, exc: BaseException) -> None:
        self.down_until = self._clock() + self._retry_interval
        if not self.down:
            self.down = True
            emit(
                "redis.unavailable",
                {
                    **self._labels,
                    "error": type(exc).__name__,
                    "detail": str(exc)[:200],
                    "serving_on": self._serving_on,
                    "retry_in_s": self._retry_interval,
                },
                logging.WARNING,
            )

    def ok(self) -> None:
        if self.down:
            self.down = False
            emit("redis.recovered", self._labels)


class SharedStorage(pybreaker.CircuitRedisStorage):
    """pybreaker's Redis storage, read through a local copy that also serves when Redis is down.

    Args:
        name: the backend; used in events and, by default, in the namespace.
        redis: a ``redis.Redis`` client (see :func:`connect` for one with short timeouts).
        namespace: Redis key prefix; default ``dify-lc:<name>`` (one namespace per backend).
        refresh: seconds a read may be served from the local copy.
        retry_interval: seconds between attempts to reach Redis once it failed.
        clock: monotonic clock (injectable for tests).
    """

    def __init__(
        self,
        name: str,
        redis: Redis,
        *,
        namespace: str | None = None,
        state: str = pybreaker.STATE_CLOSED,
        refresh: float = 0.1,
        retry_interval: float = 5.0,
        clock: Any = time.monotonic,
    ) -> None:
        self.backend = name
        self._local = pybreaker.CircuitMemoryStorage(state)
        self._refresh = refresh
        self._clock = clock
        self._next_read = 0.0
        self._health = RedisHealth({"backend": name}, "local state", retry_interval, clock)
        super().__init__(state, redis, namespace=namespace or f"dify-lc:{name}")
        self._set_if_greater = redis.register_script(_SET_IF_GREATER)
        self._keys = [
            self._namespace(k) for k in ("state", "fail_counter", "opened_at", "opened_at_ms")
        ]

    # ------------------------------------------------------------------ Redis reachability

    @property
    def available(self) -> bool:
        """Is Redis answering (as of the last attempt)?"""
        return not self._health.down

    def _write(self, fn: Any, *args: Any) -> Any:
        """Run one Redis command unless Redis is known to be down; ``None`` when it fails."""
        health = self._health
        if not health.usable():
            return None
        try:
            result = fn(*args)
        except redis_errors() as exc:
            health.failed(exc)
            return None
        health.ok()
        return result

    def _initialize_redis_state(self, state: str) -> None:
        try:
            with self._redis.pipeline() as pipe:
                pipe.setnx(self._namespace("fail_counter"), 0)
                pipe.setnx(self._namespace("success_counter"), 0)
                pipe.setnx(self._namespace("state"), state)
                pipe.execute()
        except redis_errors() as exc:
            self._health.failed(exc)

    def sync(self) -> None:
        """Refresh the local copy from Redis now (normally done lazily every ``refresh`` s).

        No lock: a thread that finds the copy expired reads Redis itself rather than waiting
        for another thread's round trip (or, worse, going on with a stale copy).
        """
        health = self._health
        if not health.usable():
            return
        now = self._clock()
        try:
            state, counter, opened, opened_ms = cast(list[Any], self._redis.mget(self._keys))
        except redis_errors() as exc:
            health.failed(exc)
            return
        health.ok()
        self._next_read = now + self._refresh
        local = self._local
        if state is None:  # keys flushed or expired: publish what this process knows
            self._initialize_redis_state(local.state)
            return
        new = state.decode()
        if new != local.state:
            emit(
                "breaker.state",
                {"backend": self.backend, "from": local.state, "to": new, "shared": True},
            )
            local.state = new
        local._fail_counter = int(counter or 0)
        if opened:
            stamp = max(int(opened), int(opened_ms or 0) / 1000)  # a plain pybreaker may be newer
            local._opened_at = datetime.fromtimestamp(stamp, UTC)

    # ------------------------------------------------------------------ CircuitBreakerStorage

    @property
    def state(self) -> str:
        if self._clock() >= self._next_read:
            self.sync()
        return self._local.state

    @state.setter
    def state(self, state: str) -> None:
        self._local.state = str(state)
        self._write(self._redis.set, self._namespace("state"), str(state))

    def increment_counter(self) -> None:
        value = self._write(self._redis.incr, self._namespace("fail_counter"))
        if value is None:
            self._local.increment_counter()
        else:
            self._local._fail_counter = int(value)

    def reset_counter(self) -> None:
        self._local.reset_counter()
        self._write(self._redis.set, self._namespace("fail_counter"), 0)

    def increment_success_counter(self) -> None:
        value = self._write(self._redis.incr, self._namespace("success_counter"))
        if value is None:
            self._local.increment_success_counter()
        else:
            self._local._success_counter = int(value)

    def reset_success_counter(self) -> None:
        self._local.reset_success_counter()
        self._write(self._redis.set, self._namespace("success_counter"), 0)

    @property
    def counter(self) -> int:
        return self._local.counter

    @property
    def success_counter(self) -> int:
        return self._local.success_counter

    @property
    def opened_at(self) -> datetime | None:
        return self._local.opened_at

    @opened_at.setter
    def opened_at(self, now: datetime) -> None:
        self._local.opened_at = now
        stamp = now.timestamp()
        self._write(self._set_if_greater, self._keys[2:], [int(stamp), int(stamp * 1000)])


def shared_breaker(
    name: str,
    redis: Redis | str,
    *,
    fail_max: int = 5,
    reset_timeout: float = 30.0,
    refresh: float = 0.1,
    retry_interval: float = 5.0,
    namespace: str | None = None,
) -> pybreaker.CircuitBreaker:
    """A ``pybreaker.CircuitBreaker`` whose state lives in Redis under ``dify-lc:<name>``.

    ``redis`` is a client or a URL (keep passwords in the environment, not in code). Pass the
    result as ``breakers={name: ...}``, or give ``redis=`` to :class:`ResilientChatModel` to
    share every route's breaker.
    """
    client = connect(redis) if isinstance(redis, str) else redis
    storage = SharedStorage(
        name, client, namespace=namespace, refresh=refresh, retry_interval=retry_interval
    )
    return pybreaker.CircuitBreaker(
        fail_max=fail_max, reset_timeout=reset_timeout, state_storage=storage, name=name
    )


# ---------------------------------------------------------------------- the probe claim


def claim_probe(
    storage: pybreaker.CircuitBreakerStorage, epoch: int, limit: int, ttl: float
) -> str | None:
    """Claim one of ``limit`` half-open probe slots for the open period ``epoch``.

    Returns the claim (pass it to :func:`release_probe`), ``None`` when every slot is taken,
    or :data:`LOCAL` when the storage is not Redis or Redis cannot answer (count locally).
    """
    if not isinstance(storage, pybreaker.CircuitRedisStorage):
        return LOCAL
    if isinstance(storage, SharedStorage) and not storage._health.usable():
        return LOCAL
    token = secrets.token_hex(8)
    ttl_ms = max(int(ttl * 1000), 1000)
    try:
        for slot in range(limit):
            key = storage._namespace(f"probe:{epoch}:{slot}")
            if storage._redis.set(key, token, nx=True, px=ttl_ms):
                return f"{key} {token}"
    except redis_errors() as exc:
        if isinstance(storage, SharedStorage):
            storage._health.failed(exc)
        return LOCAL
    return None


def release_probe(storage: pybreaker.CircuitBreakerStorage, claim: str) -> None:
    """Give back a probe slot whose call ended without an outcome (only if still ours)."""
    key, token = claim.split(" ", 1)
    try:
        storage._redis.eval(_DELETE_IF_OWNED, 1, key, token)  # type: ignore[attr-defined]
    except redis_errors():
        pass  # the claim lapses by its TTL
