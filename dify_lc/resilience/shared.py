"""Breaker state shared by many processes through Redis, and the half-open probe claim.

:class:`SharedStorage` is pybreaker's ``CircuitRedisStorage`` (same keys, one namespace per
backend, so plain pybreaker processes can read it) with what a hot path and a fleet need:

* Reads come from a local copy no older than ``refresh`` seconds (one ``MGET`` renews it), so
  a call pays no Redis round trip. A trip in one process is seen by every other within
  ``refresh``.
* State changes are single Lua scripts, never read-then-write: opening sets the state, the
  open time and a new *open period* (a counter) together; half-open and closed are
  compare-and-set on the period, so a process acting on a stale copy cannot undo a newer
  change (a late "half-open" over a fresh "open", a probe closing a breaker that re-opened).
* Half-open probes are claimed with ``SET NX PX`` on ``probe:<period>:<slot>``: exactly
  ``half_open_probes`` calls probe per open period across the fleet. A claim lives as long
  as the probe call may (its deadline), so a slow probe keeps it, and lapses after that, so a
  process that dies mid-probe does not block recovery for longer.
* While Redis is unreachable the local copy *is* the breaker: calls keep being served on local
  state, one ``redis.unavailable`` warning is logged, and Redis is tried again every
  ``retry_interval`` seconds (``redis.recovered`` when it answers). An "open" decided during
  the outage is published on recovery unless Redis holds a newer one. pybreaker's own storage
  would instead report "closed" with a zero counter, so a breaker could never open.

Hosts must keep their clocks in sync (NTP), as with pybreaker's own Redis storage: the open
time is each host's wall clock.
"""

from __future__ import annotations

import functools
import logging
import secrets
import threading
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

LOCAL: Final = "local"  # a claim's answer when Redis cannot decide: count probes locally
OPEN, HALF_OPEN, CLOSED = pybreaker.STATE_OPEN, pybreaker.STATE_HALF_OPEN, pybreaker.STATE_CLOSED
DEFAULT_PROBE_TTL = 300.0  # a probe claim's life when the call has no deadline

# KEYS: state, opened_at, opened_at_ms, period, success_counter. ARGV: seconds, milliseconds.
# pybreaker keeps opened_at in whole seconds, which would let a process probe up to a second
# early with a 1 s reset_timeout: the milliseconds go in a key of our own next to it.
# Returns {new period, the state before}.
_OPEN = """
local before = redis.call('GET', KEYS[1]) or 'closed'
redis.call('SET', KEYS[1], 'open')
redis.call('SET', KEYS[2], ARGV[1])
redis.call('SET', KEYS[3], ARGV[2])
redis.call('SET', KEYS[5], 0)
return {redis.call('INCR', KEYS[4]), before}
"""
# KEYS: state, period, fail_counter. ARGV: expected state, expected period, new state.
_MOVE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] or (redis.call('GET', KEYS[2]) or '0') ~= ARGV[2] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[3])
if ARGV[3] == 'closed' then redis.call('SET', KEYS[3], 0) end
return 1
"""
# KEYS: state, period, opened_at_ms, then one key per probe slot.
# ARGV: period, token, ttl in ms, now in ms, reset_timeout in ms.
# Returns -1 if the shared breaker is not open / half-open in that period (a stale copy) or is
# still cooling down, -2 if every slot is taken, else slot * 2 + 1 if this claim moved it
# open -> half-open, slot * 2 if not.
_CLAIM = """
local state = redis.call('GET', KEYS[1])
if (redis.call('GET', KEYS[2]) or '0') ~= ARGV[1] or (state ~= 'open' and state ~= 'half-open') then
  return -1
end
local opened_ms = tonumber(redis.call('GET', KEYS[3]) or '0')
if state == 'open' and opened_ms + tonumber(ARGV[5]) > tonumber(ARGV[4]) then
  return -1
end
for i = 4, #KEYS do
  if redis.call('SET', KEYS[i], ARGV[2], 'NX', 'PX', ARGV[3]) then
    local moved = 0
    if state == 'open' then
      redis.call('SET', KEYS[1], 'half-open')
      moved = 1
    end
    return (i - 4) * 2 + moved
  end
end
return -2
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

    __slots__ = (
        "_clock",
        "_labels",
        "_lock",
        "_retry_interval",
        "_serving_on",
        "down",
        "down_until",
    )

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
        self._lock = threading.Lock()  # flips the flags only; never held across I/O
        self.down = False
        self.down_until = 0.0

    def usable(self) -> bool:
        """Worth trying Redis now?"""
        return not self.down or self._clock() >= self.down_until

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            self.down_until = self._clock() + self._retry_interval
            first, self.down = not self.down, True
        if first:
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

    def ok(self) -> bool:
        """Redis answered; ``True`` if that ends an outage."""
        if not self.down:
            return False
        with self._lock:
            was, self.down = self.down, False
        if was:
            emit("redis.recovered", self._labels)
        return was


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
        state: str = CLOSED,
        refresh: float = 0.1,
        retry_interval: float = 5.0,
        clock: Any = time.monotonic,
    ) -> None:
        self.backend = name
        self.circuit: pybreaker.CircuitBreaker | None = None  # set by the breaker that owns it
        self._local = pybreaker.CircuitMemoryStorage(state)
        self.period = 0  # the open period the local copy belongs to
        self._refresh = refresh
        self._clock = clock
        self._next_read = 0.0
        self._full_until = 0.0  # every probe slot of the current period was taken, until then
        self._generation = 0  # bumped by every state change: a read started before is stale
        # What could not reach Redis, replayed when it answers again (see _reconcile).
        self._pending_open: datetime | None = None
        self._pending: list[tuple[str, tuple[Any, ...]]] = []
        self._health = RedisHealth({"backend": name}, "local state", retry_interval, clock)
        super().__init__(state, redis, namespace=namespace or f"dify-lc:{name}")
        self._open_script = redis.register_script(_OPEN)
        self._move_script = redis.register_script(_MOVE)
        self._claim_script = redis.register_script(_CLAIM)
        self._release_script = redis.register_script(_DELETE_IF_OWNED)
        keys = ("state", "fail_counter", "opened_at", "opened_at_ms", "period", "success_counter")
        self._k = {k: self._namespace(k) for k in keys}
        self._read_keys = [self._k[k] for k in keys[:5]]

    # ------------------------------------------------------------------ Redis reachability

    @property
    def available(self) -> bool:
        """Is Redis answering (as of the last attempt)?"""
        return not self._health.down

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """One Redis command unless Redis is known to be down; ``None`` when it fails."""
        health = self._health
        if not health.usable():
            return None
        try:
            result = fn(*args, **kwargs)
        except redis_errors() as exc:
            health.failed(exc)
            return None
        if health.down and health.ok():
            self._next_read = 0.0  # read (and reconcile) on the next access
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

    # ------------------------------------------------------------------ reading

    def sync(self) -> None:
        """Refresh the local copy from Redis now (normally done lazily every ``refresh`` s).

        No lock: a thread that finds the copy expired reads Redis itself rather than waiting
        for another thread's round trip (or going on with a stale copy). A read that started
        before a local state change is dropped rather than allowed to undo it.
        """
        health = self._health
        if not health.usable():
            return
        generation, now = self._generation, self._clock()
        try:
            values = cast(list[Any], self._redis.mget(self._read_keys))
        except redis_errors() as exc:
            health.failed(exc)
            return
        health.ok()
        if self._pending_open is not None or self._pending or values[0] is None:
            self._reconcile(values)
            return
        if generation != self._generation:
            return  # a state change happened meanwhile: read again next time
        self._next_read = now + self._refresh
        state_b, counter, opened, opened_ms, period = values
        local = self._local
        new = state_b.decode()
        if new != local.state:
            emit(
                "breaker.state",
                {"backend": self.backend, "from": local.state, "to": new, "shared": True},
            )
            local.state = new
            cb = self.circuit
            if cb is not None:  # keep pybreaker's own state object in step, without side effects
                cb._state = cb._create_new_state(new, notify=False)
        local._fail_counter = int(counter or 0)
        if int(period or 0) != self.period:
            self._full_until = 0.0
        self.period = int(period or 0)
        if opened:
            stamp = max(int(opened), int(opened_ms or 0) / 1000)  # a plain pybreaker may be newer
            local._opened_at = datetime.fromtimestamp(stamp, UTC)

    def _reconcile(self, values: list[Any]) -> None:
        """Redis answers again (or lost its keys): replay what this process decided meanwhile.

        An "open" decided during the outage is published unless Redis holds a newer one (only
        a decision made here, not an "open" merely learned from Redis earlier). Probe outcomes
        (compare-and-set moves) and claim releases are replayed; both are safe to repeat.
        Then Redis is the truth again.
        """
        state_b, opened_ms = values[0], values[3]
        pending_open, self._pending_open = self._pending_open, None
        pending, self._pending = self._pending, []
        if pending_open is not None and (
            state_b != OPEN.encode() or int(pending_open.timestamp() * 1000) > int(opened_ms or 0)
        ):
            self.publish_open(pending_open)
        elif state_b is None:
            self._initialize_redis_state(CLOSED)
        for kind, args in pending:
            if kind == "move":
                self._call(self._move_script, *args)
            else:
                self._call(self._release_script, *args)
        self._wrote()
        self._next_read = 0.0

    # ------------------------------------------------------------------ transitions (atomic)

    def _wrote(self) -> None:
        self._generation += 1

    def publish_open(self, now: datetime) -> bool:
        """Open (or re-open) for a new period: state, open time and period in one script.

        Returns whether the shared breaker was not open before (so listeners should hear).
        """
        self._wrote()
        local = self._local
        before = local.state
        local.state = OPEN
        local._opened_at = now
        local._success_counter = 0
        stamp = now.timestamp()
        keys = [self._k[k] for k in ("state", "opened_at", "opened_at_ms", "period")]
        keys.append(self._k["success_counter"])
        result = self._call(self._open_script, keys, [int(stamp), int(stamp * 1000)])
        if result is None:
            self._pending_open = now
            self.period += 1
            return before != OPEN
        self.period = int(result[0])
        previous = result[1]
        return (previous.decode() if isinstance(previous, bytes) else str(previous)) != OPEN

    def publish_move(self, expected: str, period: int, new: str) -> bool:
        """``expected`` → ``new`` if the shared breaker is still in that state and period."""
        self._wrote()
        keys = [self._k["state"], self._k["period"], self._k["fail_counter"]]
        args = (keys, [expected, str(period), new])
        moved = self._call(self._move_script, *args)
        if moved is None:  # Redis unreachable: decide on the local copy, replay on recovery
            self._pending.append(("move", args))
            moved = self._local.state == expected and self.period == period
        if moved:
            self._local.state = new
            if new == CLOSED:
                self._local._fail_counter = 0
        return bool(moved)

    def add_failure(self) -> int:
        """Count one failure; returns the count (Redis's own answer, not a later read)."""
        value = self._call(self._redis.incr, self._k["fail_counter"])
        if value is None:
            self._local.increment_counter()
            return self._local.counter
        self._local._fail_counter = int(value)
        return int(value)

    # ------------------------------------------------------------------ CircuitBreakerStorage

    @property
    def state(self) -> str:
        if self._clock() >= self._next_read:
            self.sync()
        return self._local.state

    @state.setter
    def state(self, state: str) -> None:
        # Only for pybreaker's own open()/close()/half_open() (a user driving the breaker by
        # hand); dify-lc's transitions go through publish_open / publish_move / claim.
        state = str(state)
        if state == OPEN:  # a new period with its open time, as dify-lc's own trips
            now = self._local.opened_at or datetime.now(UTC)
            self.publish_open(now)
            return
        self._wrote()
        self._local.state = state
        self._call(self._redis.set, self._k["state"], state)

    def increment_counter(self) -> None:
        self.add_failure()

    def reset_counter(self) -> None:
        self._local.reset_counter()
        self._call(self._redis.set, self._k["fail_counter"], 0)

    def increment_success_counter(self) -> None:
        value = self._call(self._redis.incr, self._k["success_counter"])
        if value is None:
            self._local.increment_success_counter()
        else:
            self._local._success_counter = int(value)

    def reset_success_counter(self) -> None:
        self._local.reset_success_counter()
        self._call(self._redis.set, self._k["success_counter"], 0)

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
        # pybreaker's open() stamps the time just before it sets the state, which publishes
        # both (see the state setter). Kept local until then.
        self._local.opened_at = now

    # ------------------------------------------------------------------ the probe claim

    def claim(
        self, limit: int, ttl: float, reset_timeout: float, wall: float
    ) -> tuple[str, bool, int] | str | None:
        """Claim one of ``limit`` probe slots of the current open period, in one script that
        checks the period and its cooldown and moves the shared breaker open → half-open.

        Returns ``(claim, moved, period)``, ``None`` (every slot taken, still cooling down, or
        this copy is stale), or :data:`LOCAL` (Redis unreachable).
        """
        if not self._health.usable():
            return LOCAL
        if self._clock() < self._full_until:
            return None  # a probe is running: no round trip per rejected call
        period, token = self.period, secrets.token_hex(8)
        slots = [self._namespace(f"probe:{period}:{slot}") for slot in range(limit)]
        keys = [self._k["state"], self._k["period"], self._k["opened_at_ms"], *slots]
        args = [str(period), token, max(int(ttl * 1000), 1000), int(wall * 1000)]
        args.append(int(reset_timeout * 1000))
        result = self._call(self._claim_script, keys, args)
        if result is None:
            return LOCAL
        result = int(result)
        if result == -1:
            self._next_read = 0.0  # stale copy or cooling down: read Redis on the next access
        elif result == -2:
            self._full_until = self._clock() + self._refresh
        if result < 0:
            return None
        moved = bool(result % 2)
        if moved:
            self._wrote()
            self._local.state = HALF_OPEN
        return f"{slots[result // 2]} {token}", moved, period

    def release(self, claim: str) -> None:
        """Give back a probe slot (only if still ours); replayed after an outage."""
        key, token = claim.split(" ", 1)
        args = ([key], [token])
        if self._call(self._release_script, *args) is None:
            self._pending.append(("release", args))


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
    breaker = pybreaker.CircuitBreaker(
        fail_max=fail_max, reset_timeout=reset_timeout, state_storage=storage, name=name
    )
    storage.circuit = breaker
    return breaker


# ---------------------------------------------------------------------- the probe claim


def _claim(
    storage: pybreaker.CircuitRedisStorage, period: int, limit: int, ttl: float
) -> str | None:
    token = secrets.token_hex(8)
    ttl_ms = max(int(ttl * 1000), 1000)
    try:
        for slot in range(limit):
            key = storage._namespace(f"probe:{period}:{slot}")
            if storage._redis.set(key, token, nx=True, px=ttl_ms):
                return f"{key} {token}"
    except redis_errors() as exc:
        if isinstance(storage, SharedStorage):
            storage._health.failed(exc)
        return LOCAL
    return None


def claim_probe(
    storage: pybreaker.CircuitBreakerStorage, epoch: int, limit: int, ttl: float
) -> str | None:
    """Claim one of ``limit`` half-open probe slots for the open period ``epoch``.

    Returns the claim (pass it to :func:`release_probe`), ``None`` when every slot is taken,
    or :data:`LOCAL` when the storage is not Redis or Redis cannot answer (count locally).
    For a plain ``CircuitRedisStorage`` the period is the whole second the breaker opened.
    """
    if not isinstance(storage, pybreaker.CircuitRedisStorage):
        return LOCAL
    return _claim(storage, epoch, limit, ttl)


def release_probe(storage: pybreaker.CircuitBreakerStorage, claim: str) -> None:
    """Give back a probe slot (only if still ours)."""
    if isinstance(storage, SharedStorage):
        storage.release(claim)
        return
    key, token = claim.split(" ", 1)
    try:
        storage._redis.eval(_DELETE_IF_OWNED, 1, key, token)  # type: ignore[attr-defined]
    except redis_errors():
        pass  # the claim lapses by its TTL
