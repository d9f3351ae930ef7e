"""ResilientChatModel / ResilientRunnable: the policy, deterministically (no real waiting)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pybreaker
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import RunnableLambda

from dify_lc import (
    AllRoutesFailedError,
    Breaker,
    BreakerPolicy,
    ChatRelay,
    ResilientChatModel,
    ResilientRunnable,
    RetryPolicy,
)
from dify_lc.errors import (
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    BreakerOpenError,
    RateLimitError,
    ServerError,
    StreamInterruptedError,
)
from dify_lc.resilience.canary import bucket, choose


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)


class Scripted(BaseChatModel):
    """Each call takes the next step: an answer, an exception, or a stream spec."""

    backend: str
    script: list[Any]
    default: Any = "ok"
    calls: int = 0
    clock: Any = None
    cost: float = 0.0  # fake seconds each call takes

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _next(self) -> Any:
        self.calls += 1
        if self.clock is not None:
            self.clock.now += self.cost
        return self.script.pop(0) if self.script else self.default

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        step = self._next()
        if isinstance(step, BaseException):
            raise step
        if isinstance(step, tuple):
            step = "".join(step[0])
        return ChatResult(generations=[ChatGeneration(message=AIMessage(step))])

    async def _agenerate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        return self._generate(messages, stop, None, **kw)

    def _stream(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> Iterator[ChatGenerationChunk]:
        step = self._next()
        if isinstance(step, BaseException):
            raise step
        pieces, error = step if isinstance(step, tuple) else ([step], None)
        for piece in pieces:
            yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
        if error is not None:
            raise error

    async def _astream(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> AsyncIterator[ChatGenerationChunk]:
        for chunk in self._stream(messages, stop, None, **kw):
            yield chunk


def resilient(*models: Scripted, clock: FakeClock | None = None, **kw: Any) -> ResilientChatModel:
    clock = clock or FakeClock()
    policy = kw.pop("breaker", BreakerPolicy(fail_max=3, reset_timeout=30))
    m = ResilientChatModel(models[0], list(models[1:]), breaker=policy, **kw)
    m.use_clock(clock, sleep=clock.sleep, asleep=clock.asleep, rand=lambda: 0.5)
    return m


def rl(after: float | None = None) -> RateLimitError:
    return RateLimitError("slow down", status=429, retry_after=after)


# --------------------------------------------------------------------------- DESIGN.md table
# outcome → (retry same backend, fall back, counts for breaker), for invoke/ainvoke/stream/astream

ROWS = [
    (
        "connect error",
        lambda: __import__("dify_lc").APIConnectionError("refused", request_sent=False),
        True,
        True,
        True,
    ),
    (
        "read timeout, relay",
        lambda: APITimeoutError("read", request_sent=True, retryable=True),
        True,
        True,
        True,
    ),
    (
        "read timeout, dify",
        lambda: APITimeoutError("read", request_sent=True, retryable=False),
        False,
        True,
        True,
    ),
    ("429", lambda: rl(1.0), True, True, True),
    ("5xx", lambda: ServerError("boom", status=503), True, True, True),
    (
        "in-band before first token",
        lambda: __import__("dify_lc").InBandStreamError("x"),
        True,
        True,
        True,
    ),
    ("dify busy 400", lambda: RateLimitError("Too many requests", status=400), True, True, True),
    ("400 other", lambda: BadRequestError("bad", status=400), False, False, False),
    ("401", lambda: AuthenticationError("key", status=401), False, True, True),
]


async def _call(model: ResilientChatModel, mode: str) -> str:
    if mode == "invoke":
        return str(model.invoke("hi").content)
    if mode == "ainvoke":
        return str((await model.ainvoke("hi")).content)
    if mode == "stream":
        return "".join(str(c.content) for c in model.stream("hi"))
    return "".join([str(c.content) async for c in model.astream("hi")])


@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "stream", "astream"])
@pytest.mark.parametrize(
    ("name", "make", "retry", "fallback", "counts"), ROWS, ids=[r[0] for r in ROWS]
)
async def test_design_table_row(
    name: str, make: Any, retry: bool, fallback: bool, counts: bool, mode: str
) -> None:
    clock = FakeClock()
    primary = Scripted(backend="primary", script=[make()], default="primary answer", clock=clock)
    relay = Scripted(backend="relay", script=[], default="relay answer", clock=clock)
    model = resilient(primary, relay, clock=clock)
    if not retry and not fallback:
        with pytest.raises(type(make())):
            await _call(model, mode)
        assert relay.calls == 0
    else:
        answer = await _call(model, mode)
        if retry:
            assert answer == "primary answer"
            assert primary.calls == 2
            assert relay.calls == 0
        else:
            assert answer == "relay answer"
            assert primary.calls == 1
            assert relay.calls == 1
    counter = model.route("primary").breaker.circuit.fail_counter
    if retry:
        assert counter == 0  # the retry's success reset the consecutive count
    else:
        assert counter == (1 if counts else 0)


# --------------------------------------------------------------------------- retry & deadline


def test_retry_after_is_honoured_then_fallback_when_it_does_not_fit() -> None:
    clock = FakeClock()
    primary = Scripted(backend="primary", script=[rl(2.0), rl(50.0)], clock=clock)
    relay = Scripted(backend="relay", script=[], default="relay", clock=clock)
    model = resilient(primary, relay, clock=clock, deadline=30)
    assert model.invoke("hi").content == "relay"
    assert clock.slept == [2.0]  # 50 s would overrun the 30 s deadline: fall back instead
    assert primary.calls == 2


def test_backoff_is_full_jitter_capped() -> None:
    clock = FakeClock()
    errors = [ServerError("x", status=500) for _ in range(4)]
    primary = Scripted(backend="primary", script=errors, clock=clock)
    model = resilient(
        primary,
        clock=clock,
        retry=RetryPolicy(max_retries=3, initial=1, max_wait=3),
        breaker=BreakerPolicy(fail_max=10),
    )
    model._core.rand = lambda: 1.0
    with pytest.raises(AllRoutesFailedError):
        model.invoke("hi")
    assert clock.slept == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "stream", "astream"])
async def test_deadline_is_never_exceeded(mode: str) -> None:
    clock = FakeClock()
    slow = [ServerError("x", status=503) for _ in range(20)]
    primary = Scripted(backend="primary", script=list(slow), clock=clock, cost=4.0)
    relay = Scripted(backend="relay", script=list(slow), clock=clock, cost=4.0)
    model = resilient(
        primary, relay, clock=clock, deadline=10, breaker=BreakerPolicy(fail_max=50, min_calls=50)
    )
    start = clock.now
    with pytest.raises(AllRoutesFailedError) as info:
        await _call(model, mode)
    assert clock.now - start <= 10 + 4.0  # at most one attempt that started in time
    assert info.value.attempts
    assert {a.route for a in info.value.attempts} <= {"primary", "relay"}


def test_all_routes_failed_lists_every_attempt() -> None:
    clock = FakeClock()
    primary = Scripted(
        backend="primary", script=[AuthenticationError("k", status=401)], clock=clock
    )
    relay = Scripted(backend="relay", script=[ServerError("boom", status=502)] * 3, clock=clock)
    model = resilient(primary, relay, clock=clock, retry=RetryPolicy(max_retries=1))
    with pytest.raises(AllRoutesFailedError) as info:
        model.invoke("hi")
    got = [(a.route, a.error_type) for a in info.value.attempts]
    assert got == [
        ("primary", "AuthenticationError"),
        ("relay", "ServerError"),
        ("relay", "ServerError"),
    ]
    assert "primary" in str(info.value)


def test_foreign_exceptions_are_classified() -> None:
    class FakeSDKRateLimit(Exception):
        status_code = 429
        response = None

    clock = FakeClock()
    primary = Scripted(
        backend="primary", script=[FakeSDKRateLimit("429"), ValueError("bad input")], clock=clock
    )
    relay = Scripted(backend="relay", script=[], clock=clock)
    model = resilient(primary, relay, clock=clock)
    with pytest.raises(BadRequestError):  # the ValueError: wrong everywhere, no fallback
        model.invoke("hi")
    assert primary.calls == 2
    assert relay.calls == 0


# --------------------------------------------------------------------------- breaker


def test_breaker_opens_on_consecutive_failures_and_skips_the_route() -> None:
    clock = FakeClock()
    primary = Scripted(
        backend="primary", script=[], default=AuthenticationError("k", status=401), clock=clock
    )
    relay = Scripted(backend="relay", script=[], default="relay", clock=clock)
    model = resilient(primary, relay, clock=clock)
    for _ in range(10):
        assert model.invoke("hi").content == "relay"
    assert primary.calls == 3  # fail_max, then skipped
    assert model.route("primary").breaker.state == "open"


def test_half_open_admits_one_probe_and_success_closes() -> None:
    clock = FakeClock()
    primary = Scripted(
        backend="primary",
        script=[AuthenticationError("k", status=401)] * 3,
        default="primary",
        clock=clock,
    )
    relay = Scripted(backend="relay", script=[], default="relay", clock=clock)
    model = resilient(primary, relay, clock=clock)
    for _ in range(3):
        model.invoke("hi")
    breaker = model.route("primary").breaker
    assert breaker.state == "open"
    clock.now += 31
    permit = breaker.admit()
    assert permit is not None
    assert permit.probe
    assert breaker.admit() is None  # the second caller is rejected at once
    breaker.release(permit)
    assert model.invoke("hi").content == "primary"
    assert breaker.state == "closed"


def test_half_open_probe_failure_reopens() -> None:
    b = Breaker("x", BreakerPolicy(fail_max=1, reset_timeout=10), wall=FakeClock())
    p = b.admit()
    assert p is not None
    b.failure(p, ServerError("x"), 0.1)
    assert b.state == "open"
    b._wall.now += 11  # type: ignore[attr-defined]
    probe = b.admit()
    assert probe is not None
    b.failure(probe, ServerError("x"), 0.1)
    assert b.state == "open"
    assert b.admit() is None


@pytest.mark.parametrize("probes", [1, 3])
def test_half_open_probe_limit_under_threads(probes: int) -> None:
    clock = FakeClock()
    b = Breaker(
        "x", BreakerPolicy(fail_max=1, reset_timeout=10, half_open_probes=probes), wall=clock
    )
    b.failure(b.admit(), ServerError("x"), 0.0)  # type: ignore[arg-type]
    clock.now += 11
    permits: list[Any] = []
    barrier = threading.Barrier(16)

    def grab() -> None:
        barrier.wait()
        permits.append(b.admit())

    threads = [threading.Thread(target=grab) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(p is not None for p in permits) == probes


async def test_half_open_probe_limit_under_tasks() -> None:
    clock = FakeClock()
    primary = Scripted(
        backend="primary",
        script=[AuthenticationError("k", status=401)],
        default="primary",
        clock=clock,
    )
    relay = Scripted(backend="relay", script=[], default="relay", clock=clock)
    model = resilient(
        primary, relay, clock=clock, breaker=BreakerPolicy(fail_max=1, reset_timeout=10)
    )
    await model.ainvoke("hi")
    clock.now += 11
    gate = asyncio.Event()
    original = primary._agenerate

    async def slow(*a: Any, **k: Any) -> ChatResult:
        await gate.wait()
        return await original(*a, **k)

    primary.__dict__["_agenerate"] = slow  # each probe waits until released
    tasks = [asyncio.create_task(model.ainvoke("hi")) for _ in range(10)]
    await asyncio.sleep(0.05)
    gate.set()
    answers = [m.content for m in await asyncio.gather(*tasks)]
    assert answers.count("primary") == 1  # one probe; the other nine went to the relay
    assert answers.count("relay") == 9


def test_failure_rate_over_the_window_opens() -> None:
    clock = FakeClock()
    b = Breaker(
        "x", BreakerPolicy(fail_max=100, window=10, min_calls=10, failure_rate=0.4), wall=clock
    )
    outcomes = [
        True,
        False,
        True,
        True,
        False,
        True,
        False,
        True,
        False,
        True,
    ]  # 40% failures, never 2 in a row
    for ok in outcomes:
        p = b.admit()
        assert p is not None
        if ok:
            b.success(p, 0.1)
        else:
            b.failure(p, ServerError("x"), 0.1)
    assert b.state == "open"


def test_slow_call_rate_opens() -> None:
    b = Breaker(
        "x",
        BreakerPolicy(window=10, min_calls=5, slow_call_duration=10.0, slow_call_rate=0.6),
        wall=FakeClock(),
    )
    for latency in (28.0, 1.0, 28.0, 28.0, 28.0):
        b.success(b.admit(), latency)  # type: ignore[arg-type]
    assert b.state == "open"


def test_errors_that_do_not_count_and_cancellation_leave_the_breaker_alone() -> None:
    b = Breaker("x", BreakerPolicy(fail_max=1), wall=FakeClock())
    b.failure(b.admit(), BadRequestError("bad"), 0.1)  # type: ignore[arg-type]
    assert b.state == "closed"
    clock = FakeClock()
    primary = Scripted(backend="primary", script=[], default=("abc", None), clock=clock)
    model = resilient(primary, clock=clock, breaker=BreakerPolicy(fail_max=1))
    for _ in model.stream("hi"):
        break  # the consumer stops early
    assert model.route("primary").breaker.state == "closed"
    assert model.route("primary").breaker.circuit.fail_counter == 0


async def test_async_failures_count() -> None:
    clock = FakeClock()
    primary = Scripted(
        backend="primary",
        script=[],
        default=ServerError("x", status=500, retryable=False),
        clock=clock,
    )
    relay = Scripted(backend="relay", script=[], default="relay", clock=clock)
    model = resilient(primary, relay, clock=clock)
    for _ in range(2):
        await model.ainvoke("hi")
    assert model.route("primary").breaker.circuit.fail_counter == 2
    chunks = [c async for c in model.astream("hi")]
    assert "".join(str(c.content) for c in chunks) == "relay"
    assert model.route("primary").breaker.state == "open"


def test_user_breaker_and_listeners() -> None:
    changes: list[tuple[str, str]] = []

    class Listener(pybreaker.CircuitBreakerListener):
        def state_change(self, cb: Any, old: Any, new: Any) -> None:
            changes.append((old.name if old else "", new.name))

    mine = pybreaker.CircuitBreaker(fail_max=2, reset_timeout=60, listeners=[Listener()])
    clock = FakeClock()
    primary = Scripted(
        backend="primary", script=[], default=ServerError("x", retryable=False), clock=clock
    )
    relay = Scripted(backend="relay", script=[], default="relay", clock=clock)
    model = ResilientChatModel(primary, [relay], breakers={"primary": mine})
    model.invoke("hi")
    model.invoke("hi")
    assert mine.current_state == "open"
    assert ("closed", "open") in changes


def test_open_breaker_rejects_in_microseconds() -> None:
    b = Breaker("x", BreakerPolicy(fail_max=1, reset_timeout=60))
    b.failure(b.admit(), ServerError("x"), 0.0)  # type: ignore[arg-type]
    n = 10_000
    start = time.perf_counter()
    for _ in range(n):
        assert b.admit() is None
    per_call = (time.perf_counter() - start) / n
    assert per_call < 50e-6  # generous bound; typical is ~1 µs


def test_breaker_holds_no_lock_across_the_call() -> None:
    # pybreaker's own breaker.call() serialises 8 threads × 0.1 s into 0.8 s.
    def slow(_: Any) -> str:
        time.sleep(0.1)
        return "done"

    model = ResilientRunnable(RunnableLambda(slow), deadline=None)
    threads = [threading.Thread(target=model.invoke, args=("x",)) for _ in range(8)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.perf_counter() - start < 0.5


# --------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("mode", ["stream", "astream"])
async def test_stream_failure_before_first_token_falls_back_transparently(mode: str) -> None:
    clock = FakeClock()
    primary = Scripted(
        backend="primary", script=[([], ServerError("x", retryable=False))], clock=clock
    )
    relay = Scripted(backend="relay", script=[], default=(["re", "lay"], None), clock=clock)
    model = resilient(primary, relay, clock=clock)
    assert await _call(model, mode) == "relay"


@pytest.mark.parametrize("mode", ["stream", "astream"])
async def test_stream_failure_after_first_token_raises_with_partial_text(mode: str) -> None:
    clock = FakeClock()
    primary = Scripted(
        backend="primary", script=[(["Hel", "lo"], ServerError("cut", status=502))], clock=clock
    )
    relay = Scripted(backend="relay", script=[], default="relay", clock=clock)
    model = resilient(primary, relay, clock=clock)
    with pytest.raises(StreamInterruptedError) as info:
        await _call(model, mode)
    assert info.value.partial_text == "Hello"
    assert relay.calls == 0  # never a duplicated answer
    assert model.route("primary").breaker.circuit.fail_counter == 1


def test_route_is_labelled() -> None:
    clock = FakeClock()
    primary = Scripted(backend="primary", script=[rl(None)], clock=clock)
    model = resilient(primary, clock=clock)
    msg = model.invoke("hi")
    assert msg.response_metadata["route"] == "primary"
    assert msg.response_metadata["attempts"] == 2


# --------------------------------------------------------------------------- canary


@given(key=st.text(min_size=1, max_size=40), w1=st.floats(0, 1), w2=st.floats(0, 1))
@settings(max_examples=300, deadline=None)
def test_canary_is_sticky_and_ramps_monotonically(key: str, w1: float, w2: float) -> None:
    low, high = sorted((w1, w2))
    position = bucket(key)
    assert position == bucket(key)  # sticky
    assert 0 <= position < 1
    before = choose([low], position)
    after = choose([high], position)
    if before == 0:
        assert after == 0  # raising the weight never moves a user back


def test_canary_shares_are_close_to_the_weights() -> None:
    users = [f"user-{i}" for i in range(20_000)]
    for weight in (0.05, 0.2, 0.5, 1.0):
        share = sum(choose([weight], bucket(u)) == 0 for u in users) / len(users)
        assert abs(share - weight) < 0.015


def test_canary_routes_a_user_first_to_the_relay_and_keeps_the_primary_as_fallback() -> None:
    clock = FakeClock()
    primary = Scripted(backend="primary", script=[], default="primary", clock=clock)
    relay = Scripted(backend="relay", script=[], default="relay", clock=clock)
    model = resilient(primary, relay, clock=clock, canary={"relay": 0.5})
    users = [f"u{i}" for i in range(200)]
    first = {u: model.invoke("hi", user=u).content for u in users}
    again = {u: model.invoke("hi", config={"configurable": {"user": u}}).content for u in users}
    assert first == again
    assert 60 < sum(v == "relay" for v in first.values()) < 140
    relay.script.extend([AuthenticationError("k", status=401)])
    relay_user = next(u for u, v in first.items() if v == "relay")
    assert model.invoke("hi", user=relay_user).content == "primary"


def test_resilient_runnable_over_runnables() -> None:
    calls: list[str] = []

    def broken(x: Any) -> Any:
        calls.append("primary")
        raise ServerError("down", retryable=False)

    def healthy(x: Any) -> Any:
        calls.append("backup")
        return {"echo": x}

    model = ResilientRunnable(
        RunnableLambda(broken).with_config(run_name="primary"),
        [RunnableLambda(healthy)],
    )
    assert model.invoke({"q": 1}) == {"echo": {"q": 1}}
    assert asyncio.run(model.ainvoke({"q": 2})) == {"echo": {"q": 2}}
    assert calls == ["primary", "backup", "primary", "backup"]
    assert isinstance(BreakerOpenError("x"), Exception)


async def test_cancelled_call_does_not_count_and_frees_the_probe() -> None:
    clock = FakeClock()
    primary = Scripted(backend="primary", script=[], default="primary", clock=clock)
    model = resilient(primary, clock=clock, breaker=BreakerPolicy(fail_max=1, reset_timeout=10))
    started = asyncio.Event()

    async def hang(*a: Any, **k: Any) -> ChatResult:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    primary.__dict__["_agenerate"] = hang
    breaker = model.route("primary").breaker
    breaker.failure(breaker.admit(), ServerError("x"), 0.0)  # type: ignore[arg-type]
    clock.now += 11  # half-open: the next call is the probe
    task = asyncio.create_task(model.ainvoke("hi"))
    await started.wait()
    assert breaker.admit() is None  # the probe slot is taken
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.state == "half-open"  # nothing counted
    assert breaker.admit() is not None  # and the slot is free again


def test_slow_start_limits_calls_in_flight_until_the_backend_is_proven() -> None:
    b = Breaker("x", BreakerPolicy(fail_max=3, min_calls=4), wall=FakeClock())
    permits = [b.admit() for _ in range(5)]
    assert [p is not None for p in permits] == [True, True, True, False, False]
    b.release(permits[0])  # type: ignore[arg-type]
    for _ in range(4):  # min_calls healthy outcomes, at most 3 in flight at a time
        p = b.admit()
        assert p is not None
        b.success(p, 0.1)
    assert all(b.admit() is not None for _ in range(50))  # proven: no limit any more


def test_slow_start_applies_again_after_recovery() -> None:
    clock = FakeClock()
    b = Breaker("x", BreakerPolicy(fail_max=1, min_calls=2, reset_timeout=5), wall=clock)
    for _ in range(2):
        b.success(b.admit(), 0.1)  # type: ignore[arg-type]
    b.failure(b.admit(), ServerError("x"), 0.1)  # type: ignore[arg-type]
    clock.now += 6
    probe = b.admit()
    assert probe is not None
    b.success(probe, 0.1)
    assert b.state == "closed"
    assert b.admit() is not None
    assert b.admit() is None  # limited to fail_max=1 in flight until proven again


async def test_concurrent_first_wave_against_a_hung_primary_reaches_it_at_most_fail_max_times() -> (
    None
):
    hung = 0
    release = asyncio.Event()

    class Hung(Scripted):
        async def _agenerate(self, *a: Any, **k: Any) -> ChatResult:
            nonlocal hung
            hung += 1
            await release.wait()
            raise APITimeoutError("read timeout", request_sent=True, retryable=False)

    clock = FakeClock()
    primary = Hung(backend="primary", script=[], clock=clock)
    relay = Scripted(backend="relay", script=[], default="relay", clock=clock)
    model = resilient(primary, relay, clock=clock, breaker=BreakerPolicy(fail_max=3))
    tasks = [asyncio.create_task(model.ainvoke("hi")) for _ in range(50)]
    await asyncio.sleep(0.05)
    release.set()
    answers = [m.content for m in await asyncio.gather(*tasks)]
    assert answers == ["relay"] * 50
    assert hung == 3
    assert model.route("primary").breaker.state == "open"


def test_an_unproven_route_held_back_by_slow_start_is_still_tried_when_nothing_else_can() -> None:
    clock = FakeClock()
    relay = Scripted(backend="relay", script=[], default="relay", clock=clock)
    official = Scripted(backend="official", script=[], default="official", clock=clock)
    model = resilient(
        official,
        relay,
        clock=clock,
        breaker=BreakerPolicy(fail_max=1, cold_start_limit=1),
        canary={"relay": 1.0},
    )
    off = model.route("official").breaker
    off.failure(off.admit(), ServerError("x"), 0.0)  # type: ignore[arg-type]
    assert off.state == "open"
    held = model.route("relay").breaker.admit()  # one call already in flight to the relay
    assert held is not None
    # relay first (canary) is held back by slow start, official is open: the relay is tried anyway
    assert model.invoke("hi", user="u").content == "relay"


def test_langsmith_params_name_the_primary_model_without_probing_attributes() -> None:
    primary = ChatRelay(model="gpt-4o", api_key="sk-fake-key", base_url="http://127.0.0.1:9/v1")
    model = ResilientChatModel(primary)
    params = model._get_ls_params(stop=["END"])
    assert params == {
        "ls_provider": "dify-lc",
        "ls_model_type": "chat",
        "ls_model_name": "gpt-4o",
        "ls_stop": ["END"],
    }
