"""Shared state through a real redis-server: breakers, the probe claim, the rate limiter.

In-process tests use several independent clients (each as a separate process would); the
multi-process tests are in ``test_shared_processes.py``.
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pybreaker
import pytest
import redis

from dify_lc import (
    BreakerPolicy,
    ChatDify,
    ChatRelay,
    RedisRateLimiter,
    ResilientChatModel,
    RetryPolicy,
    configure_logging,
    from_config,
    shared_breaker,
)
from dify_lc.errors import BadRequestError, ConfigurationError, ServerError
from dify_lc.resilience.breaker import Breaker
from dify_lc.resilience.shared import SharedStorage, claim_probe
from dify_lc.testing import FakeDify, FakeRelay, Fault

FAILURE = ServerError("upstream 500", status=500, backend="dify")
POLICY = BreakerPolicy(fail_max=3, reset_timeout=1.0, min_calls=100, window=100)


def _breaker(url: str, name: str = "dify", policy: BreakerPolicy = POLICY, **kw: Any) -> Breaker:
    """One breaker with its own Redis client: what one process would hold."""
    cb = shared_breaker(
        name, url, fail_max=policy.fail_max, reset_timeout=policy.reset_timeout, **kw
    )
    return Breaker(name, policy, breaker=cb)


def _trip(breaker: Breaker) -> None:
    for _ in range(breaker.policy.fail_max):
        permit = breaker.admit(last=True)
        assert permit is not None
        breaker.failure(permit, FAILURE, 0.01)


@pytest.fixture
def events() -> Iterator[io.StringIO]:
    out = io.StringIO()
    handler = configure_logging(json=True, stream=out)
    try:
        yield out
    finally:
        handler.close()
        import logging

        logging.getLogger("dify_lc").removeHandler(handler)


def _events(out: io.StringIO, name: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]
    return [e for e in lines if e["event"] == name]


# ---------------------------------------------------------------------- breaker state


def test_one_trip_opens_the_breaker_for_every_holder(redis_url: str) -> None:
    a, b = _breaker(redis_url), _breaker(redis_url)
    _trip(a)
    assert a.state == "open"
    time.sleep(0.15)  # > refresh: b reads the shared state
    assert b.state == "open"
    assert b.admit() is None  # rejected without calling the backend


def test_reads_come_from_the_local_copy_between_refreshes(redis_url: str) -> None:
    breaker = _breaker(redis_url, refresh=60.0)
    storage = breaker.circuit._state_storage
    assert isinstance(storage, SharedStorage)
    calls = 0
    real_mget = storage._redis.mget

    def counting_mget(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return real_mget(*args, **kwargs)

    storage._redis.mget = counting_mget  # type: ignore[method-assign]
    for _ in range(1000):
        permit = breaker.admit()
        assert permit is not None
        breaker.success(permit, 0.001)
    assert calls <= 1  # one refresh at most, not one round trip per call


def test_interoperates_with_plain_pybreaker_redis_storage(redis_url: str) -> None:
    ours = _breaker(redis_url)
    client = redis.Redis.from_url(redis_url)
    theirs = pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, client, namespace="dify-lc:dify")
    _trip(ours)
    assert theirs.state == "open"
    assert theirs.opened_at is not None
    theirs.state = pybreaker.STATE_CLOSED
    time.sleep(0.15)
    assert ours.state == "closed"
    client.close()


def test_each_backend_has_its_own_namespace(redis_url: str) -> None:
    dify, relay = _breaker(redis_url, "dify"), _breaker(redis_url, "relay")
    _trip(dify)
    time.sleep(0.15)
    assert (dify.state, relay.state) == ("open", "closed")
    keys = {k.decode() for k in redis.Redis.from_url(redis_url).keys("*")}
    assert "dify-lc:dify:pybreaker:state" in keys
    assert "dify-lc:relay:pybreaker:state" in keys


def test_remote_state_changes_are_logged_by_every_holder(
    redis_url: str, events: io.StringIO
) -> None:
    a, b = _breaker(redis_url), _breaker(redis_url)
    assert b.state == "closed"
    _trip(a)
    time.sleep(0.15)
    assert b.state == "open"
    shared = [e for e in _events(events, "breaker.state") if e.get("shared")]
    assert shared
    assert shared[0]["to"] == "open"
    assert shared[0]["backend"] == "dify"


# ---------------------------------------------------------------------- half-open probe claim


def test_exactly_one_holder_probes_in_half_open(redis_url: str) -> None:
    holders = [_breaker(redis_url) for _ in range(8)]
    _trip(holders[0])
    time.sleep(1.1)  # reset_timeout passes
    barrier = threading.Barrier(len(holders) * 4)
    permits: list[Any] = []
    lock = threading.Lock()

    def try_probe(breaker: Breaker) -> None:
        barrier.wait()
        permit = breaker.admit()
        with lock:
            permits.append(permit)

    threads = [threading.Thread(target=try_probe, args=(h,)) for h in holders for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    granted = [p for p in permits if p is not None]
    assert len(granted) == 1
    assert granted[0].probe
    assert granted[0].claim
    assert len(permits) == 32


def test_probe_limit_counts_across_holders(redis_url: str) -> None:
    policy = BreakerPolicy(fail_max=3, reset_timeout=1.0, half_open_probes=2, min_calls=100)
    holders = [_breaker(redis_url, policy=policy) for _ in range(4)]
    _trip(holders[0])
    time.sleep(1.1)
    permits = [h.admit() for h in holders for _ in range(3)]
    assert sum(p is not None for p in permits) == 2


def test_a_released_probe_can_be_claimed_again(redis_url: str) -> None:
    a, b = _breaker(redis_url), _breaker(redis_url)
    _trip(a)
    time.sleep(1.1)
    permit = a.admit()
    assert permit is not None
    assert b.admit() is None
    a.release(permit)  # cancelled: no outcome, the slot is free again
    time.sleep(0.15)  # others learn it within refresh (a taken slot is not re-asked per call)
    assert b.admit() is not None


def test_a_failed_probe_reopens_for_a_new_period_with_its_own_cooldown(redis_url: str) -> None:
    a, b = _breaker(redis_url), _breaker(redis_url)
    _trip(a)
    time.sleep(1.1)
    probe = b.admit()
    assert probe is not None
    period = probe.period
    b.failure(probe, FAILURE, 0.01)
    time.sleep(0.15)
    assert a.state == "open"
    assert a.admit() is None  # the cooldown starts again: nobody probes at once
    assert b.admit() is None
    time.sleep(1.0)
    again = a.admit()
    assert again is not None
    assert again.period == period + 1  # a new period, with its own probe slot


def test_a_slow_probe_keeps_its_claim_past_reset_timeout(redis_url: str) -> None:
    a, b = _breaker(redis_url), _breaker(redis_url)
    _trip(a)
    time.sleep(1.1)
    probe = a.admit(probe_ttl=10.0)  # the call may take up to 10 s
    assert probe is not None
    time.sleep(1.2)  # longer than reset_timeout: the probe is still running
    assert b.admit() is None
    assert a.admit() is None
    a.success(probe, 2.3)
    time.sleep(0.15)
    assert b.state == "closed"


def test_a_late_failure_reopens_and_the_running_probe_cannot_close_it(redis_url: str) -> None:
    a, b, c = _breaker(redis_url), _breaker(redis_url), _breaker(redis_url)
    admitted_early = [a.admit(last=True) for _ in range(3)]  # in flight before the trip
    _trip(b)
    time.sleep(1.1)
    probe = c.admit()
    assert probe is not None
    for permit in admitted_early:  # calls admitted before the trip fail late, mid-probe
        assert permit is not None
        a.failure(permit, FAILURE, 3.0)
    time.sleep(0.15)
    assert b.state == "open"
    assert b.admit() is None  # re-opened: a new cooldown, no second probe meanwhile
    c.success(probe, 1.2)  # the old period's probe succeeds...
    time.sleep(0.15)
    assert b.state == "open"  # ...but the breaker re-opened since: it stays open


def test_a_stale_read_never_undoes_a_local_write(redis_url: str) -> None:
    breaker = _breaker(redis_url)
    storage = breaker.circuit._state_storage
    assert isinstance(storage, SharedStorage)
    real_mget = storage._redis.mget

    def racing_mget(*args: Any, **kwargs: Any) -> Any:
        values = real_mget(*args, **kwargs)  # read "closed"...
        _trip(breaker)  # ...while another thread opens the breaker
        return values

    storage._redis.mget = racing_mget  # type: ignore[method-assign]
    storage.sync()
    storage._redis.mget = real_mget  # type: ignore[method-assign]
    assert storage._local.state == "open"


def test_opened_at_has_millisecond_precision(redis_url: str) -> None:
    a, b = _breaker(redis_url), _breaker(redis_url)
    while time.time() % 1 < 0.85:  # trip late in a second...
        time.sleep(0.01)
    _trip(a)
    time.sleep(0.3)  # ...so whole seconds would say reset_timeout (1 s) had passed
    assert b.state == "open"
    assert b.admit() is None


def test_a_successful_probe_closes_it_for_everyone(redis_url: str) -> None:
    a, b = _breaker(redis_url), _breaker(redis_url)
    _trip(a)
    time.sleep(1.1)
    permit = b.admit()
    assert permit is not None
    b.success(permit, 0.01)
    time.sleep(0.15)
    assert a.state == "closed"
    assert a.admit() is not None


def test_claims_are_atomic_set_nx_per_open_period(redis_url: str) -> None:
    storage = _breaker(redis_url).circuit._state_storage
    assert claim_probe(storage, 100, 1, 5.0) not in (None, "local")
    assert claim_probe(storage, 100, 1, 5.0) is None
    assert claim_probe(storage, 101, 1, 5.0) not in (None, "local")  # a new period


# ---------------------------------------------------------------------- Redis unreachable


def test_redis_down_at_start_serves_on_local_state(events: io.StringIO) -> None:
    breaker = _breaker("redis://127.0.0.1:9/0")  # nothing listens there
    assert breaker.state == "closed"
    _trip(breaker)  # the breaker still works, on local state
    assert breaker.state == "open"
    assert breaker.admit() is None
    down = _events(events, "redis.unavailable")
    assert len(down) == 1  # logged once, not per call
    assert down[0]["serving_on"] == "local state"


def test_redis_going_away_and_coming_back(
    redis_server: Any, redis_url: str, events: io.StringIO
) -> None:
    breaker = _breaker(redis_url, retry_interval=0.2)
    assert breaker.state == "closed"
    redis_server.stop()
    try:
        time.sleep(0.15)
        for _ in range(100):
            permit = breaker.admit()
            assert permit is not None
            breaker.success(permit, 0.001)
        _trip(breaker)
        assert breaker.state == "open"  # opens on local state
        assert len(_events(events, "redis.unavailable")) == 1
    finally:
        redis_server.start()  # empty: the shared state is gone
    time.sleep(0.3)
    assert breaker.state == "open"  # the local "open" is published, not dropped
    other = _breaker(redis_url)
    assert other.state == "open"
    assert other.admit() is None  # with its open time: the cooldown holds for everyone
    assert _events(events, "redis.recovered")


def test_an_open_decided_during_an_outage_wins_over_an_older_shared_state(
    redis_url: str,
) -> None:
    a, b = _breaker(redis_url, retry_interval=0.3), _breaker(redis_url)
    assert a.state == "closed"
    client = redis.Redis.from_url(redis_url)
    client.execute_command("CLIENT", "PAUSE", 800, "ALL")  # Redis stops answering, keeps data
    time.sleep(0.15)
    _trip(a)  # the backend failed meanwhile: A opens on its own
    assert a.state == "open"
    time.sleep(1.0)  # Redis answers again
    assert a.state == "open"  # not silently closed by Redis's older "closed"
    time.sleep(0.15)
    assert b.state == "open"  # and every process learns it
    client.close()


def test_a_hung_redis_costs_one_timeout_per_retry_interval(redis_url: str) -> None:
    breaker = _breaker(redis_url, retry_interval=5.0)
    assert breaker.state == "closed"
    client = redis.Redis.from_url(redis_url)
    client.execute_command("CLIENT", "PAUSE", 2000, "ALL")
    time.sleep(0.15)
    start = time.monotonic()
    for _ in range(200):
        permit = breaker.admit()
        assert permit is not None
        breaker.failure(permit, BadRequestError("bad input"), 0.001)  # not counted: no write
        breaker.release(permit)
    # One 0.25 s socket timeout, then local state until retry_interval: not 200 of them.
    assert time.monotonic() - start < 0.6
    client.close()


# ---------------------------------------------------------------------- wiring


def test_resilient_model_shares_every_route_breaker(redis_url: str) -> None:
    def model() -> ResilientChatModel:
        return ResilientChatModel(
            ChatDify(api_key="app-fake-key", base_url="http://127.0.0.1:9/v1", backend="dify"),
            [ChatRelay(model="m", api_key="sk-fake-key", base_url="http://127.0.0.1:9/v1")],
            redis=redis_url,
        )

    one, two = model(), model()
    for route in one.routes:
        assert isinstance(route.breaker.circuit._state_storage, SharedStorage)
    _trip(one.route("dify").breaker)
    time.sleep(0.15)
    assert two.route("dify").breaker.state == "open"
    assert two.route("relay").breaker.state == "closed"


def test_routes_and_redis_together_are_refused() -> None:
    route_model = ResilientChatModel(
        ChatRelay(model="m", api_key="sk-fake-key", base_url="http://127.0.0.1:9/v1")
    )
    with pytest.raises(ConfigurationError, match="redis="):
        ResilientChatModel(routes=route_model.routes, redis="redis://127.0.0.1:9/0")


def test_from_config_shared_section(redis_url: str) -> None:
    config = {
        "shared": {"redis_url_env": "REDIS_URL"},
        "routes": [
            {"name": "official", "type": "dify", "base_url": "http://127.0.0.1:9/v1"},
            {
                "name": "relay",
                "type": "relay",
                "model": "gpt-4o",
                "base_url": "http://127.0.0.1:9/v1",
                "requests_per_second": 5,
            },
        ],
    }
    env = {"DIFY_API_KEY": "app-fake-key", "RELAY_API_KEY": "sk-fake-key", "REDIS_URL": redis_url}
    model = from_config(config, env=env)
    assert isinstance(model.route("official").breaker.circuit._state_storage, SharedStorage)
    assert isinstance(model.route("relay").runnable.rate_limiter, RedisRateLimiter)
    with pytest.raises(ConfigurationError, match="REDIS_URL"):
        from_config(config, env={k: v for k, v in env.items() if k != "REDIS_URL"})
    with pytest.raises(ConfigurationError, match="redis_url_env"):
        from_config({**config, "shared": {"redis_url": redis_url}}, env=env)


# ---------------------------------------------------------------------- rate limiter


def test_rate_limiter_shares_one_budget(redis_url: str) -> None:
    a = RedisRateLimiter(redis_url, requests_per_second=5, key="budget")
    b = RedisRateLimiter(redis_url, requests_per_second=5, key="budget")
    other = RedisRateLimiter(redis_url, requests_per_second=5, key="another")
    taken = [lim.acquire(blocking=False) for lim in (a, b) * 4]
    assert sum(taken) == 5  # five between them, not five each
    assert other.acquire(blocking=False)  # a different key is a different budget


def test_rate_limiter_blocking_waits_for_the_window(redis_url: str) -> None:
    limiter = RedisRateLimiter(redis_url, requests_per_second=4, key="wait")
    start = time.monotonic()
    for _ in range(6):
        assert limiter.acquire()
    assert 0.9 < time.monotonic() - start < 2.0  # 4 at once, the next 2 when the second ends


def test_rate_limiter_async(redis_url: str) -> None:
    limiter = RedisRateLimiter(redis_url, requests_per_second=3, key="async")

    async def take() -> float:
        start = time.monotonic()
        await asyncio.gather(*(limiter.aacquire() for _ in range(6)))  # 3 now, 3 in 1 s
        assert not await limiter.aacquire(blocking=False)
        return time.monotonic() - start

    assert 0.9 < asyncio.run(take()) < 2.0


def test_rate_limiter_fractional_rate(redis_url: str) -> None:
    limiter = RedisRateLimiter(redis_url, requests_per_second=0.5, key="slow")
    assert limiter.acquire(blocking=False)
    assert not limiter.acquire(blocking=False)  # one per two seconds


@pytest.mark.parametrize(("rate", "at_once"), [(9.9, 9), (2.5, 2), (1.001, 1), (0.4, 1)])
def test_rate_limiter_never_bursts_past_one_seconds_worth(
    redis_url: str, rate: float, at_once: int
) -> None:
    limiter = RedisRateLimiter(redis_url, requests_per_second=rate, key=f"burst-{rate}")
    taken = sum(limiter.acquire(blocking=False) for _ in range(200))
    assert taken == at_once


def test_rate_limiter_waits_without_spinning(redis_url: str) -> None:
    limiter = RedisRateLimiter(redis_url, requests_per_second=1, key="spin")
    tries = 0
    real_try = limiter._try

    def counting() -> tuple[bool, float]:
        nonlocal tries
        tries += 1
        return real_try()

    limiter._try = counting  # type: ignore[method-assign]
    assert limiter.acquire()
    start = time.monotonic()
    assert limiter.acquire()  # waits for the next second
    assert time.monotonic() - start > 0.9
    assert tries <= 15  # slept between tries (max_wait 0.1 s), did not spin


def test_rate_limiter_redis_down_uses_the_local_limit(events: io.StringIO) -> None:
    limiter = RedisRateLimiter(
        "redis://127.0.0.1:9/0", requests_per_second=3, key="down", fallback_rate=2
    )
    taken = [limiter.acquire(blocking=False) for _ in range(5)]
    assert sum(taken) == 2  # the local fallback rate, still a limit
    down = _events(events, "redis.unavailable")
    assert len(down) == 1
    assert down[0]["serving_on"] == "local rate limit"


def test_rate_limiter_bad_rate() -> None:
    with pytest.raises(ConfigurationError):
        RedisRateLimiter("redis://127.0.0.1:9/0", requests_per_second=0)


def test_rate_limiter_on_a_model_limits_calls(redis_url: str) -> None:
    limiter = RedisRateLimiter(redis_url, requests_per_second=3, key="model")
    with FakeRelay(api_key="sk-fake-key") as relay:
        model = ChatRelay(model="m", api_key="sk-fake-key", base_url=relay.base_url)
        model = model.model_copy(update={"rate_limiter": limiter})
        start, wall_start = time.monotonic(), time.time()
        for _ in range(4):
            model.invoke("hi")
        assert time.monotonic() - start > 0.9
        fourth = relay.requests[3].received_at
    assert fourth - wall_start > 0.9  # the 4th request reached the server a second later


def test_resilient_end_to_end_with_shared_breaker(redis_url: str) -> None:
    """Process A's failures open the breaker; process B then skips Dify without a request."""
    with FakeDify(api_key="app-fake-key") as dify, FakeRelay(api_key="sk-fake-key") as relay:
        dify.set_default(Fault.server_error(500))

        def model() -> ResilientChatModel:
            return ResilientChatModel(
                ChatDify(api_key="app-fake-key", base_url=dify.base_url, backend="dify"),
                [ChatRelay(model="m", api_key="sk-fake-key", base_url=relay.base_url)],
                retry=RetryPolicy(max_retries=0),
                breaker=POLICY,
                redis=redis_url,
            )

        a, b = model(), model()
        for _ in range(3):
            a.invoke("hi")
        seen = len(dify.requests)
        assert seen == 3
        time.sleep(0.15)
        for _ in range(5):
            b.invoke("hi")
        assert len(dify.requests) == seen  # B never called the open backend


def test_a_redis_password_never_reaches_the_log(events: io.StringIO) -> None:
    password = "fake-redis-password-8d1c"
    limiter = RedisRateLimiter(
        f"redis://:{password}@127.0.0.1:9/0", requests_per_second=3, key="secret"
    )
    limiter.acquire(blocking=False)
    breaker = _breaker(f"redis://user:{password}@127.0.0.1:9/0")
    _trip(breaker)
    assert _events(events, "redis.unavailable")
    assert password not in events.getvalue()
    assert password not in repr(limiter) + repr(breaker)


def test_redis_outage_is_a_warning(events: io.StringIO) -> None:
    _trip(_breaker("redis://127.0.0.1:9/0"))
    (down,) = _events(events, "redis.unavailable")
    assert down["level"] == "warning"


# ---------------------------------------------------------------------- second review


def test_a_probe_outcome_lost_to_a_redis_blip_is_replayed(redis_url: str) -> None:
    a, b = _breaker(redis_url, retry_interval=0.3), _breaker(redis_url)
    _trip(a)
    time.sleep(1.1)
    probe = a.admit(probe_ttl=20.0)
    assert probe is not None
    client = redis.Redis.from_url(redis_url)
    client.execute_command("CLIENT", "PAUSE", 400, "WRITE")  # a hiccup as the probe answers
    time.sleep(0.05)
    a.success(probe, 0.5)  # the close cannot reach Redis...
    time.sleep(0.8)
    assert a.state == "closed"  # ...and is replayed when Redis answers again
    time.sleep(0.15)
    assert b.state == "closed"
    assert b.admit() is not None
    assert client.keys("*probe*") == []  # and the claim is given back, not left to its TTL
    client.close()


def test_opening_by_hand_publishes_a_period_and_its_open_time(redis_url: str) -> None:
    a = _breaker(redis_url, policy=BreakerPolicy(fail_max=1, reset_timeout=5.0))
    b = _breaker(redis_url, policy=BreakerPolicy(fail_max=1, reset_timeout=5.0))
    a.circuit.open()  # an operator opens it with pybreaker's own API
    time.sleep(0.15)
    assert b.state == "open"
    assert b.admit() is None  # the cooldown holds: 5 s, not an immediate probe


def test_a_process_cut_off_from_redis_does_not_reopen_what_the_fleet_closed(
    redis_url: str,
) -> None:
    x, y = _breaker(redis_url, retry_interval=0.5), _breaker(redis_url)
    _trip(y)
    time.sleep(0.15)
    assert x.state == "open"
    x._fleet._health.failed(OSError("network blip"))  # type: ignore[union-attr]
    time.sleep(1.0)
    probe = x.admit()  # cooldown over: X moves to half-open on its own copy
    assert probe is not None
    x.release(probe)
    probe = y.admit()
    assert probe is not None
    y.success(probe, 0.01)  # the fleet probes and closes meanwhile
    time.sleep(0.5)
    assert x.state == "closed"  # X's own half-open did not re-open the fleet's breaker
    assert y.state == "closed"


def test_two_trips_at_once_announce_one_change(redis_url: str) -> None:
    storage = _breaker(redis_url).circuit._state_storage
    assert isinstance(storage, SharedStorage)
    now = datetime.now(UTC)
    assert storage.publish_open(now) is True
    assert storage.publish_open(now) is False  # already open: no second state_change


def test_a_change_learned_from_redis_updates_pybreakers_state_quietly(redis_url: str) -> None:
    a, b = _breaker(redis_url), _breaker(redis_url)
    heard: list[str] = []

    class Listener(pybreaker.CircuitBreakerListener):
        def state_change(self, cb: Any, old: Any, new: Any) -> None:
            heard.append(new.name)

    b.circuit.add_listener(Listener())
    _trip(a)
    time.sleep(0.15)
    assert b.state == "open"
    assert b.circuit.state.name == "open"  # pybreaker's own view agrees...
    assert heard == []  # ...without replaying a transition this process did not make


def test_plain_pybreaker_storage_recovers_with_a_sub_second_reset(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    storage = pybreaker.CircuitRedisStorage("closed", client, namespace="plain")
    cb = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=0.2, state_storage=storage)
    breaker = Breaker("plain", BreakerPolicy(fail_max=1, reset_timeout=0.2), breaker=cb)
    while time.time() % 1 > 0.2:  # early in a second: the probe fails in the same second
        time.sleep(0.01)
    _trip(breaker)
    time.sleep(0.25)
    probe = breaker.admit(probe_ttl=30.0)
    assert probe is not None
    breaker.failure(probe, FAILURE, 0.01)
    time.sleep(0.3)
    assert breaker.admit() is not None  # the failed probe's slot was given back
    client.close()


def test_an_old_periods_probe_cannot_close_a_newer_half_open(redis_url: str) -> None:
    a, b, c = _breaker(redis_url), _breaker(redis_url), _breaker(redis_url)
    early = a.admit(last=True)
    _trip(b)
    time.sleep(1.1)
    old = c.admit()  # period 1's probe
    assert old is not None
    assert early is not None
    a.failure(early, FAILURE, 5.0)  # a late failure re-opens: period 2
    time.sleep(1.1)
    new = b.admit()  # period 2's probe, in flight
    assert new is not None
    assert new.period == old.period + 1
    c.success(old, 2.0)  # the old probe answers last
    state = redis.Redis.from_url(redis_url).get("dify-lc:dify:pybreaker:state")
    assert state == b"half-open"  # period 2's probe decides, not the stale one


def test_a_claim_for_a_stale_period_is_refused(redis_url: str) -> None:
    a, b = _breaker(redis_url), _breaker(redis_url)
    _trip(a)
    time.sleep(1.1)
    fleet = b.circuit._state_storage
    assert isinstance(fleet, SharedStorage)
    assert b.state == "open"
    fleet.period -= 1  # b's copy lags one open period behind
    assert fleet.claim(1, 10.0, 1.0, time.time()) is None
    assert b.state == "open"  # and the refusal makes it read Redis again
    assert fleet.period == a.circuit._state_storage.period  # type: ignore[attr-defined]
    assert b.admit() is not None


def test_consecutive_failures_count_across_processes(redis_url: str) -> None:
    a, b = _breaker(redis_url), _breaker(redis_url)
    assert b.state == "closed"  # b's copy: counter 0
    for _ in range(2):
        permit = a.admit(last=True)
        assert permit is not None
        a.failure(permit, FAILURE, 0.01)
    permit = b.admit(last=True)
    assert permit is not None
    b.failure(permit, FAILURE, 0.01)  # the third failure of the fleet, b's first
    assert b.state == "open"


def test_a_probe_claim_lives_as_long_as_the_call_may(redis_url: str) -> None:
    primary = ChatDify(api_key="app-fake-key", base_url="http://127.0.0.1:9/v1", backend="dify")
    model = ResilientChatModel(primary, breaker=POLICY, redis=redis_url, deadline=7.0)
    _trip(model.route("dify").breaker)
    time.sleep(1.1)
    step = model._core.plan({}).next()
    assert step.permit.claim  # type: ignore[union-attr]
    key = step.permit.claim.split()[0]  # type: ignore[union-attr]
    ttl_ms = redis.Redis.from_url(redis_url).pttl(key)
    assert 6000 < ttl_ms <= 7000  # the call's deadline, not reset_timeout nor the default


def test_rejected_calls_during_a_probe_cost_no_round_trip_each(redis_url: str) -> None:
    a, b = _breaker(redis_url), _breaker(redis_url)
    _trip(a)
    time.sleep(1.1)
    assert a.admit() is not None  # the probe, in flight
    fleet = b.circuit._state_storage
    assert isinstance(fleet, SharedStorage)
    calls = 0
    real = fleet._claim_script

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return real(*args, **kwargs)

    fleet._claim_script = counting  # type: ignore[method-assign]
    assert all(b.admit() is None for _ in range(500))
    assert calls <= 2


def test_each_app_can_have_its_own_namespace(redis_url: str) -> None:
    def model(namespace: str) -> ResilientChatModel:
        return ResilientChatModel(
            ChatDify(api_key="app-fake-key", base_url="http://127.0.0.1:9/v1", backend="relay"),
            redis=redis_url,
            redis_namespace=namespace,
        )

    support, billing = model("support-bot"), model("billing-bot")
    _trip(support.route("relay").breaker)
    time.sleep(0.15)
    assert billing.route("relay").breaker.state == "closed"  # same route name, other app
    keys = {k.decode() for k in redis.Redis.from_url(redis_url).keys("*:state")}
    assert keys == {"support-bot:relay:pybreaker:state", "billing-bot:relay:pybreaker:state"}


def test_from_config_shared_namespace(redis_url: str) -> None:
    config = {
        "shared": {"redis_url_env": "REDIS_URL", "namespace": "support-bot"},
        "routes": [
            {
                "name": "relay",
                "type": "relay",
                "model": "m",
                "base_url": "http://127.0.0.1:9/v1",
                "requests_per_second": 2,
            }
        ],
    }
    env = {"RELAY_API_KEY": "sk-fake-key"}
    model = from_config(config, env={**env, "REDIS_URL": redis_url})
    storage = model.route("relay").breaker.circuit._state_storage
    assert storage._namespace("state") == "support-bot:relay:pybreaker:state"
    assert model.route("relay").runnable.rate_limiter._key == "support-bot:relay"
    with pytest.raises(ConfigurationError, match="namespace"):
        from_config(
            {**config, "shared": {"redis_url_env": "REDIS_URL", "namespace": ""}},
            env={**env, "REDIS_URL": redis_url},
        )
