"""Four processes behind one Redis act as one: one trip opens the breaker for all, one process
probes in half-open, and together they stay within one request rate.

Each worker is a separate Python process (``spawn``) with its own ResilientChatModel, exactly
as four replicas behind a load balancer would be. The fake servers run in this process and
count what reaches them.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

from dify_lc.testing import DEFAULT_ANSWER, FakeDify, FakeRelay, Fault

WORKERS = 4
DIFY_KEY = "app-fake-key-processes"
RELAY_KEY = "sk-fake-key-processes"
RELAY_ANSWER = "relay answer"
RESET = 2.0  # the breaker's reset_timeout


def _model(dify_url: str, relay_url: str, redis_url: str) -> Any:
    from dify_lc import BreakerPolicy, ChatDify, ChatRelay, ResilientChatModel, RetryPolicy

    return ResilientChatModel(
        ChatDify(api_key=DIFY_KEY, base_url=dify_url, backend="dify", read_timeout=5),
        [ChatRelay(model="gpt-4o", api_key=RELAY_KEY, base_url=relay_url, backend="relay")],
        retry=RetryPolicy(max_retries=0),
        breaker=BreakerPolicy(fail_max=3, reset_timeout=RESET, window=100, min_calls=100),
        redis=redis_url,
        deadline=10,
    )


def breaker_worker(
    index: int, dify_url: str, relay_url: str, redis_url: str, barrier: Any, out: Any
) -> None:
    model = _model(dify_url, relay_url, redis_url)
    report: dict[str, Any] = {"index": index}
    barrier.wait()  # 1: everyone is up
    if index == 0:  # one replica meets the failing primary and trips the breaker
        report["tripping"] = [str(model.invoke("hi").content) for _ in range(3)]
    barrier.wait()  # 2: tripped
    time.sleep(0.3)  # longer than the shared state's refresh
    report["state_after_trip"] = model.route("dify").breaker.state
    report["while_open"] = [str(model.invoke("hi").content) for _ in range(5)]
    barrier.wait()  # 3: the parent makes Dify healthy but slow, and waits out reset_timeout
    barrier.wait()  # 4: half-open: every replica calls at once, three threads each
    with ThreadPoolExecutor(3) as pool:
        report["half_open"] = list(pool.map(lambda _: str(model.invoke("hi").content), range(3)))
    barrier.wait()  # 5: the probe has answered
    time.sleep(0.3)
    report["state_after_probe"] = model.route("dify").breaker.state
    out.put(report)


def rate_worker(relay_url: str, redis_url: str, calls: int, barrier: Any, out: Any) -> None:
    from dify_lc import ChatRelay, RedisRateLimiter

    class Recording(RedisRateLimiter):
        """Notes when each request was let through (what the shared limit controls)."""

        stamps: ClassVar[list[float]] = []

        def acquire(self, *, blocking: bool = True) -> bool:
            ok = super().acquire(blocking=blocking)
            self.stamps.append(time.time())
            return ok

    limiter = Recording(redis_url, requests_per_second=10, key="dify-lc:relay")
    model = ChatRelay(model="gpt-4o", api_key=RELAY_KEY, base_url=relay_url, rate_limiter=limiter)
    barrier.wait()
    for _ in range(calls):
        model.invoke("hi")
    out.put(limiter.stamps)


def _generate(server: FakeDify | FakeRelay) -> int:
    paths = ("/chat-messages", "/chat/completions")
    return sum(1 for r in server.requests if r.path.endswith(paths))


def test_four_processes_share_one_breaker(redis_url: str) -> None:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(WORKERS + 1, timeout=60)
    out = ctx.Queue()
    with (
        FakeDify(api_key=DIFY_KEY) as dify,
        FakeRelay(api_key=RELAY_KEY, answer=RELAY_ANSWER) as relay,
    ):
        dify.set_default(Fault.server_error(500))
        args = (dify.base_url, relay.base_url, redis_url, barrier, out)
        procs = [ctx.Process(target=breaker_worker, args=(i, *args)) for i in range(WORKERS)]
        for p in procs:
            p.start()
        try:
            barrier.wait()  # 1
            barrier.wait()  # 2: replica 0 has tripped it
            tripped_at = time.monotonic()
            assert _generate(dify) == 3
            barrier.wait()  # 3: the others have called while it was open
            assert _generate(dify) == 3  # 20 calls while open: none reached Dify
            dify.set_default(Fault(delay=1.0))  # healthy again, but the probe takes a second
            time.sleep(max(0.0, RESET + 0.3 - (time.monotonic() - tripped_at)))
            barrier.wait()  # 4: 12 calls at once in half-open
            barrier.wait()  # 5
            reports = sorted((out.get(timeout=60) for _ in procs), key=lambda r: r["index"])
        finally:
            for p in procs:
                p.join(30)
                if p.is_alive():
                    p.kill()
        assert _generate(dify) == 4  # exactly one probe among the 12 concurrent calls
    assert all(p.exitcode == 0 for p in procs)
    assert reports[0]["tripping"] == [RELAY_ANSWER] * 3  # each failure fell back
    for report in reports:
        assert report["state_after_trip"] == "open"
        assert report["while_open"] == [RELAY_ANSWER] * 5
        assert report["state_after_probe"] == "closed"
    answers = [a for r in reports for a in r["half_open"]]
    assert answers.count(DEFAULT_ANSWER) == 1  # the probe, served by Dify
    assert answers.count(RELAY_ANSWER) == 11  # the others were rejected at once, to the relay


def test_four_processes_stay_within_one_rate(redis_url: str) -> None:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(WORKERS + 1, timeout=60)
    out = ctx.Queue()
    calls = 8  # 32 in all at 10/s: at least 3 s together; alone, each would take no time
    with FakeRelay(api_key=RELAY_KEY) as relay:
        args = (relay.base_url, redis_url, calls, barrier, out)
        procs = [ctx.Process(target=rate_worker, args=args) for _ in range(WORKERS)]
        for p in procs:
            p.start()
        try:
            barrier.wait()
            granted = sorted(t for _ in procs for t in out.get(timeout=60))
        finally:
            for p in procs:
                p.join(30)
                if p.is_alive():
                    p.kill()
        arrived = sorted(r.received_at for r in relay.requests)
    assert len(granted) == len(arrived) == WORKERS * calls
    # In any window a little under one second, at most 10 requests were let through (the
    # moving window is exact; the margin absorbs the time between Redis and the stamp).
    for i, start in enumerate(granted):
        in_window = sum(1 for t in granted[i:] if t < start + 0.95)
        assert in_window <= 10, f"{in_window} requests let through within 0.95 s from #{i}"
    assert granted[-1] - granted[0] > 2.9
    assert arrived[-1] - arrived[0] > 2.5  # and the server saw them spread out too
