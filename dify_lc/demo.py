"""``dify-lc demo``: the migration story, offline, in compressed time.

Two fake channels on loopback: the official Dify app at 61.4% success with slow answers
(28 s instead of 3 s in the story; times here are divided by ``--time-scale``, 100 by default)
and an OpenAI-compatible relay at 99.7%. The same traffic — many simulated users, async, at a
fixed rate — goes through (a) a naive ``ChatDify`` with no resilience and (b) a
``ResilientChatModel`` that ramps a canary 5% → 20% → 50% → 100% to the relay with the
official channel as fallback. Every figure printed is measured in this run.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from dify_lc.chat_models import ChatDify, ChatRelay
from dify_lc.errors import DifyLCError
from dify_lc.observability.log import configure_logging
from dify_lc.observability.prices import Price, PriceTable
from dify_lc.observability.report import build_report, plot, render
from dify_lc.resilience.breaker import Breaker, BreakerPolicy
from dify_lc.resilience.plan import Route
from dify_lc.resilience.retry import RetryPolicy
from dify_lc.resilient import ResilientChatModel
from dify_lc.testing import Chaos, FakeDify, FakeRelay, Fault, LogNormal

__all__ = ["DemoConfig", "run_demo"]

DIFY_KEY = "app-demo-offline-key"
RELAY_KEY = "sk-demo-offline-key"
RAMP = (0.05, 0.20, 0.50, 1.00)


@dataclass
class DemoConfig:
    requests: int = 3000
    users: int = 400
    qps: float = 250.0
    seed: int = 7
    time_scale: float = 100.0
    log: str = "dify-lc-demo-events.jsonl"
    plot: str | None = None
    progress: bool = True


@dataclass
class Result:
    name: str
    latencies: list[float] = field(default_factory=list)
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    tokens_in: int = 0
    tokens_out: int = 0

    def add(self, latency: float, ok: bool, error: str | None, usage: Any) -> None:
        self.latencies.append(latency)
        if ok:
            self.ok += 1
            if usage:
                self.tokens_in += usage.get("input_tokens", 0)
                self.tokens_out += usage.get("output_tokens", 0)
        else:
            self.errors[error or "error"] = self.errors.get(error or "error", 0) + 1

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1] if ordered else 0.0

    @property
    def success(self) -> float:
        return self.ok / len(self.latencies) if self.latencies else 0.0


def _official_chaos(scale: float) -> Chaos:
    # 38.6% failures of every kind the story met; answers ~28 s with a slow tail.
    return Chaos(
        faults=[
            (0.12, Fault.dify_concurrency_limit()),
            (0.08, Fault.server_error(503)),
            (0.06, Fault.html(504)),
            (0.06, Fault(inband_error_after=0)),
            (0.066, Fault(hang=True)),
        ],
        # capped under the clients' 60 s timeout: the channel's own 61.4% is what users see
        first_token=LogNormal(median=28.0 / scale, sigma=0.5, cap=55.0 / scale),
    )


def _relay_chaos(scale: float) -> Chaos:
    return Chaos(
        faults=[(0.003, Fault.server_error(502))],
        first_token=LogNormal(median=3.0 / scale, sigma=0.35, cap=20.0 / scale),
    )


class _Progress:
    """A bar redrawn in place on a terminal; a line per quarter when output is a file."""

    def __init__(self, total: int, label: str, enabled: bool) -> None:
        self.total, self.label, self.enabled, self.done = total, label, enabled, 0
        self.tty = sys.stdout.isatty()
        self._last = 0.0

    def tick(self) -> None:
        self.done += 1
        if self.enabled and not self.tty:
            if self.done * 4 % self.total < 4 and self.done * 4 // self.total > (
                (self.done - 1) * 4 // self.total
            ):
                print(f"  {self.label:<34} {self.done}/{self.total}", flush=True)
            return
        now = time.monotonic()
        if self.enabled and (now - self._last > 0.1 or self.done == self.total):
            self._last = now
            width = 30
            filled = int(width * self.done / self.total)
            bar = "█" * filled + "·" * (width - filled)
            print(f"\r  {self.label:<34} {bar} {self.done}/{self.total}", end="", flush=True)
            if self.done == self.total:
                print(flush=True)


async def _drive(
    name: str,
    call: Callable[[int, str], Awaitable[Any]],
    cfg: DemoConfig,
    rng: random.Random,
    on_start: Callable[[int], None] | None = None,
) -> Result:
    result = Result(name)
    progress = _Progress(cfg.requests, name, cfg.progress)
    users = [f"user-{rng.randrange(10**6):06d}" for _ in range(cfg.users)]
    picks = [rng.choice(users) for _ in range(cfg.requests)]
    interval = 1.0 / cfg.qps
    start = time.monotonic()

    async def one(i: int, user: str) -> None:
        t0 = time.monotonic()
        try:
            message = await call(i, user)
        except DifyLCError as exc:
            result.add(time.monotonic() - t0, False, type(exc).__name__, None)
        except Exception as exc:  # the naive client has no typed-error guarantee to rely on
            result.add(time.monotonic() - t0, False, type(exc).__name__, None)
        else:
            result.add(time.monotonic() - t0, True, None, message.usage_metadata)
        progress.tick()

    tasks = []
    for i, user in enumerate(picks):
        if on_start is not None:
            on_start(i)
        delay = start + i * interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, user)))
    await asyncio.gather(*tasks)
    return result


def _table(naive: Result, resilient: Result, scale: float) -> str:
    def ms(seconds: float) -> str:
        return f"{seconds * 1000:,.0f} ms"

    def story(seconds: float) -> str:
        return f"{seconds * scale:,.1f} s"

    def errs(r: Result) -> str:
        top = sorted(r.errors.items(), key=lambda kv: -kv[1])[:3]
        return ", ".join(f"{k} {v}" for k, v in top) or "-"

    rows = [
        ("requests", str(len(naive.latencies)), str(len(resilient.latencies))),
        ("success rate", f"{naive.success * 100:.1f}%", f"{resilient.success * 100:.2f}%"),
        ("P50", ms(naive.pct(50)), ms(resilient.pct(50))),
        ("P95", ms(naive.pct(95)), ms(resilient.pct(95))),
        ("P99", ms(naive.pct(99)), ms(resilient.pct(99))),
        ("P99 in story time", story(naive.pct(99)), story(resilient.pct(99))),
        ("errors seen by users", errs(naive), errs(resilient)),
        (
            "tokens in/out",
            f"{naive.tokens_in}/{naive.tokens_out}",
            f"{resilient.tokens_in}/{resilient.tokens_out}",
        ),
    ]
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    width[1] = max(width[1], len("naive ChatDify"))
    width[2] = max(width[2], len("ResilientChatModel"))
    lines = [
        f"  {'':<{width[0]}}  {'naive ChatDify':<{width[1]}}  {'ResilientChatModel':<{width[2]}}",
        f"  {'-' * width[0]}  {'-' * width[1]}  {'-' * width[2]}",
    ]
    lines += [f"  {a:<{width[0]}}  {b:<{width[1]}}  {c:<{width[2]}}" for a, b, c in rows]
    return "\n".join(lines)


async def _run(cfg: DemoConfig, dify: FakeDify, relay: FakeRelay) -> tuple[Result, Result]:
    scale = cfg.time_scale
    timeout = 60.0 / scale  # a usual client timeout, 60 s in the story
    rng = random.Random(cfg.seed)

    naive_model = ChatDify(
        api_key=SecretStr(DIFY_KEY),
        base_url=dify.base_url,
        read_timeout=timeout,
        max_retries=0,
        backend="official",
    )

    async def naive(i: int, user: str) -> Any:
        return await naive_model.ainvoke("Where is my order?", user=user)

    naive_result = await _drive("(a) naive ChatDify", naive, cfg, random.Random(cfg.seed))

    official = ChatDify(
        api_key=SecretStr(DIFY_KEY),
        base_url=dify.base_url,
        read_timeout=timeout,
        backend="official",
    )
    backup = ChatRelay(
        model="gpt-4o",
        api_key=SecretStr(RELAY_KEY),
        base_url=relay.base_url,
        read_timeout=timeout,
        backend="relay",
    )
    # The official channel is judged strictly (the outage: 61% success, 28 s answers trips the
    # rate rules); the relay with the defaults.
    strict = BreakerPolicy(
        fail_max=5,
        reset_timeout=600.0 / scale,  # probe again every 10 minutes (story time)
        window=20,
        min_calls=8,
        cold_start_limit=2,
        failure_rate=0.3,
        slow_call_duration=10.0 / scale,
        slow_call_rate=0.5,
    )
    routes = [
        Route("official", official, Breaker("official", strict), idempotent=False, native=True),
        Route("relay", backup, Breaker("relay", BreakerPolicy()), native=True),
    ]
    resilient = ResilientChatModel(
        routes=routes,
        prices=PriceTable({"gpt-4o": Price(2.5, 10.0)}),  # the relay's list price per 1M tokens
        canary={"relay": RAMP[0]},
        retry=RetryPolicy(max_retries=1, initial=0.5 / scale, max_wait=4.0 / scale),
        deadline=120.0 / scale,
    )
    relay_route = resilient.route("relay")
    step = max(cfg.requests // len(RAMP), 1)

    def ramp(i: int) -> None:  # 5% → 20% → 50% → 100%, one quarter of the traffic each
        relay_route.weight = RAMP[min(i // step, len(RAMP) - 1)]

    async def guarded(i: int, user: str) -> Any:
        return await resilient.ainvoke("Where is my order?", user=user)

    resilient_result = await _drive("(b) ResilientChatModel + canary", guarded, cfg, rng, ramp)
    await naive_model.aclose()
    await official.aclose()
    await backup.aclose()
    return naive_result, resilient_result


def run_demo(cfg: DemoConfig) -> int:
    """Run the demo; print the comparison; return the exit code (0 when the targets hold)."""
    scale = cfg.time_scale
    print(
        f"dify-lc demo — the migration story, offline, time divided by {scale:g}\n"
        f"  official Dify channel: {_official_chaos(scale).success_rate * 100:.1f}% success, "
        f"answers ~28 s (story time)\n"
        f"  OpenAI-compatible relay: {_relay_chaos(scale).success_rate * 100:.1f}% success, "
        f"answers ~3 s\n"
        f"  {cfg.requests} requests per client from {cfg.users} users at {cfg.qps:g} req/s\n"
    )
    log_path = Path(cfg.log)
    with ExitStack() as stack:
        dify = stack.enter_context(FakeDify(api_key=DIFY_KEY, seed=cfg.seed, record=False))
        relay = stack.enter_context(FakeRelay(api_key=RELAY_KEY, seed=cfg.seed + 1, record=False))
        dify.set_chaos(_official_chaos(scale))
        relay.set_chaos(_relay_chaos(scale))
        stream = stack.enter_context(open(log_path, "w", encoding="utf-8"))
        root = logging.getLogger("dify_lc")
        saved = (root.level, root.propagate)  # the demo borrows logging; it gives it back
        handler = configure_logging(json=True, stream=stream)
        try:
            started = time.monotonic()
            naive, resilient = asyncio.run(_run(cfg, dify, relay))
            elapsed = time.monotonic() - started
        finally:
            root.removeHandler(handler)
            root.setLevel(saved[0])
            root.propagate = saved[1]
    print("\nWhat users saw:\n")
    print(_table(naive, resilient, scale))
    with open(log_path, encoding="utf-8") as lines:
        report = build_report(lines)
    print(
        "\nPer channel, from the resilient client's event log (attempts; story latencies /"
        f" {scale:g}):\n"
    )
    print("\n".join("  " + line for line in render(report, "table").splitlines()))
    if cfg.plot:
        try:
            plot(report, cfg.plot)
        except RuntimeError as exc:  # matplotlib missing: say how to get it, keep the run
            print(f"\nno plot: {exc}", file=sys.stderr)
        else:
            print(f"\nlatency plot written to {cfg.plot}")
    ratio = naive.pct(99) / resilient.pct(99) if resilient.pct(99) else math.inf
    ok = resilient.success >= 0.999 and ratio >= 5
    print(
        f"\nresilient success {resilient.success * 100:.2f}% (naive {naive.success * 100:.1f}%),"
        f" P99 {ratio:.1f}× lower; event log: {log_path} ({elapsed:.1f} s)\n"
        f"compare channels any time with: dify-lc report {log_path}"
    )
    return 0 if ok else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_demo(DemoConfig()))
