"""Resilience benchmark: a hung primary behind ``ResilientChatModel``, against loopback fakes.

The primary is a fake Dify that accepts every request and never answers (``Fault(hang=True)``),
called with a 2 s read timeout; the fallback is a healthy fake relay. Measured in one run:

A. 200 sequential ``invoke`` calls: once the breaker is open, median ≤ 2× the relay's own
   median and p99 ≤ 50 ms; the hung primary receives at most ``fail_max`` + probe requests;
B. the same with ``ainvoke`` at 50 in flight: 200 calls from a fresh model, then 200 more once
   the breaker is open (with a cold-start limit, the first 200 may all be over before it opens);
   A and B each show the anchor, LangChain's ``with_fallbacks`` with the same 2 s timeout;
C. with no failure, ``ResilientChatModel(ChatDify)`` adds ≤ 10% to a bare ``ChatDify.invoke``
   median (and, for reference, async throughput of both at 64 in flight).

The hung Dify runs in this process: a hung server uses no CPU, and its request log counts what
reached it. The healthy relay and the healthy Dify run as separate processes, as in
``bench_core.py``. Each scenario's bare-relay reference runs in the same run, interleaved (A)
or right before and after (B), so both see the same machine. Whether a call reached the
primary is read from its breaker's admission (a delegating wrapper, see ``AdmissionLog``).

Usage::

    python benchmarks/bench_resilience.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, ExitStack
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import pybreaker
from langchain_core.messages import BaseMessage

from dify_lc import ChatDify, ChatRelay
from dify_lc.resilience.breaker import BreakerPolicy
from dify_lc.resilient import ResilientChatModel
from dify_lc.testing import FakeDify, Fault

# The benchmarks folder is not a package: import bench_core from beside this file.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_core import (
    DIFY_KEY,
    PROMPT,
    SHORT_ANSWER,
    Servers,
    chat_dify,
    chat_relay,
    check,
    close_model,
    fire,
    invoke_text,
    percentile,
    start_servers,
    table,
    time_interleaved,
)

PRIMARY = "official"  # route names: the ChatDify's and the ChatRelay's `backend`
FALLBACK = "relay"
TIMEOUT = 2.0  # read timeout of the hung primary, seconds
FAIL_MAX = 5
RESET_TIMEOUT = 600.0  # longer than the run: no half-open probe is expected
DEADLINE = 10.0
PAID_S = 1.0  # a call this slow paid the primary's timeout

MEDIAN_TARGET = 2.0  # after open: median ≤ this × the relay's own median
P99_TARGET_MS = 50.0  # after open: p99 at most
OVERHEAD_TARGET = 1.10  # resilient / bare ChatDify median, no failure: at most

PACKAGES = ("dify-lc", "langchain-core", "pybreaker", "httpx", "aiohttp")


@dataclass(frozen=True, slots=True)
class Config:
    """Iteration counts of one run."""

    calls: int = 200  # scenarios A and B
    concurrency: int = 50  # scenario B
    relay_warmup: int = 50  # warm-up calls of each relay model (direct, no breaker)
    batch: int = 10  # sequential calls per case per round (interleaving)
    anchor_calls: int = 20  # with_fallbacks, sequential: each pays TIMEOUT
    anchor_async_calls: int = 200  # with_fallbacks at `concurrency` in flight
    overhead_n: int = 300
    overhead_warmup: int = 30
    async_n: int = 2000
    async_warmup: int = 256
    async_rounds: int = 3
    async_concurrency: int = 64


FULL = Config()
# Scenarios A and B keep their size (they take a few seconds, mostly the 2 s timeouts, and
# fewer calls would make their p99 a burst of the first waves); the anchor and C shrink.
QUICK = Config(
    anchor_calls=3,
    anchor_async_calls=100,
    overhead_n=60,
    overhead_warmup=10,
    async_n=256,
    async_warmup=64,
    async_rounds=1,
)

AsyncCall = Callable[[], Awaitable[str]]


# --------------------------------------------------------------------------- fixtures


class BreakerWatch(pybreaker.CircuitBreakerListener):
    """Records when a breaker changes state (``time.perf_counter`` seconds)."""

    def __init__(self) -> None:
        self.opened_at: float | None = None
        self.half_opens = 0
        self.changes: list[str] = []

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        name = new_state.name
        self.changes.append(name)
        if name == pybreaker.STATE_OPEN and self.opened_at is None:
            self.opened_at = time.perf_counter()
        elif name == pybreaker.STATE_HALF_OPEN:
            self.half_opens += 1


class AdmissionLog:
    """Instrumentation: a route's breaker that also notes which calls it let through.

    Delegates everything to the route's own breaker; ``admit`` appends the route name to the
    current call's list (a context variable, so concurrent calls do not mix). This is how a
    call is known to have reached the primary or skipped it (open breaker, cold-start limit).
    """

    def __init__(self, name: str, inner: Any) -> None:
        self._name = name
        self._inner = inner

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._inner, attr)

    def admit(self, *args: Any, **kwargs: Any) -> Any:
        permit = self._inner.admit(*args, **kwargs)
        if permit is not None:
            box = _ADMITTED.get(None)
            if box is not None:
                box.append(self._name)
        return permit


_ADMITTED: ContextVar[list[str]] = ContextVar("admitted")


class GcPauses:
    """Full (generation 2) garbage collections of this process: when, and how long.

    On this kind of machine one takes ~70-140 ms (a LangChain process holds ~110k objects after
    its imports) and stops every call in flight: it shows up in a p99 at 50 in flight.
    """

    def __init__(self) -> None:
        self.events: list[tuple[float, float]] = []  # (start, ms)
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.events.append((self._start, (time.perf_counter() - self._start) * 1000))

    def between(self, start: float | None, end: float | None = None) -> list[float]:
        """Pauses (ms) that started in [start, end); none when `start` is None."""
        if start is None:
            return []
        stop = time.perf_counter() if end is None else end
        return [round(ms, 1) for at, ms in self.events if start <= at < stop]


GC_PAUSES = GcPauses()


def hung_servers(servers: Servers, hung: FakeDify) -> Servers:
    """The healthy relay, and the hung Dify in place of the healthy one."""
    return Servers(dify=hung.base_url, relay=servers.relay)


def primary_model(servers: Servers, hung: FakeDify) -> ChatDify:
    return chat_dify(hung_servers(servers, hung), read_timeout=TIMEOUT, backend=PRIMARY)


def resilient_model(servers: Servers, hung: FakeDify) -> tuple[ResilientChatModel, BreakerWatch]:
    """The scenario's model: hung ChatDify first, healthy ChatRelay as the fallback."""
    policy = BreakerPolicy(fail_max=FAIL_MAX, reset_timeout=RESET_TIMEOUT)
    primary, fallback = primary_model(servers, hung), chat_relay(servers)
    model = ResilientChatModel(primary, [fallback], breaker=policy, deadline=DEADLINE)
    route = model.route(PRIMARY)
    watch = BreakerWatch()
    route.breaker.circuit.add_listener(watch)
    route.breaker = AdmissionLog(PRIMARY, route.breaker)
    return model, watch


def generate_requests(hung: FakeDify) -> int:
    """Generate requests (``POST …/chat-messages``) the hung Dify received since its reset."""
    return sum(1 for r in list(hung.requests) if r.path.endswith("/chat-messages"))


def answer_route(message: BaseMessage, name: str) -> str:
    """The route that answered (checked to carry the expected text)."""
    check(name, message.content, SHORT_ANSWER)
    route: str = message.response_metadata.get("route", FALLBACK)
    return route


# --------------------------------------------------------------------------- statistics


def stats(latencies_ms: Sequence[float]) -> dict[str, Any]:
    if not latencies_ms:
        return {"n": 0}
    return {
        "n": len(latencies_ms),
        "median_ms": statistics.median(latencies_ms),
        "p90_ms": percentile(latencies_ms, 90),
        "p99_ms": percentile(latencies_ms, 99),
        "max_ms": max(latencies_ms),
        "paid_timeout": sum(1 for x in latencies_ms if x >= PAID_S * 1000),
    }


@dataclass(frozen=True, slots=True)
class Target:
    """One target of the issue, checked on this run's numbers."""

    name: str
    measured: str
    met: bool


def latency_targets(
    label: str, s: dict[str, Any], relay_median: float, gc_ms: Sequence[float]
) -> list[Target]:
    """Median ≤ MEDIAN_TARGET× the relay's own median, and p99 ≤ P99_TARGET_MS."""
    if not s["n"]:  # no such call: nothing shows the target is met
        return [Target(f"{label}: median and p99", "no calls", False)]
    ratio = s["median_ms"] / relay_median
    pauses = f" (full GC pauses meanwhile: {_pauses(gc_ms)})" if gc_ms else ""
    return [
        Target(
            f"{label}: median ≤ {MEDIAN_TARGET:g}× relay median",
            f"{s['median_ms']:.2f} ms vs {relay_median:.2f} ms = {ratio:.2f}×",
            ratio <= MEDIAN_TARGET,
        ),
        Target(
            f"{label}: p99 ≤ {P99_TARGET_MS:g} ms",
            f"{s['p99_ms']:.2f} ms{pauses}",
            s["p99_ms"] <= P99_TARGET_MS,
        ),
    ]


def requests_target(label: str, result: dict[str, Any]) -> Target:
    probes = result["probes"]
    return Target(
        f"{label}: hung primary requests ≤ fail_max + probes ({FAIL_MAX} + {probes})",
        str(result["hung_requests"]),
        result["hung_requests"] <= FAIL_MAX + probes,
    )


@dataclass(frozen=True, slots=True)
class Sample:
    """One call: when it started (``perf_counter`` s), how long it took, who answered."""

    start: float
    ms: float
    route: str
    reached_primary: bool  # the primary's breaker let it through (it waited for the timeout)


def summarize(
    samples: Sequence[Sample], hung: FakeDify, model: ResilientChatModel, watch: BreakerWatch
) -> dict[str, Any]:
    """A scenario's numbers, split by whether a call reached the primary and by time."""
    opened = watch.opened_at
    return {
        "all": stats([s.ms for s in samples]),
        "reached_primary": stats([s.ms for s in samples if s.reached_primary]),
        "skipped_before_open": stats(
            [
                s.ms
                for s in samples
                if not s.reached_primary and (opened is None or s.start < opened)
            ]
        ),
        "after_open": stats([s.ms for s in samples if opened is not None and s.start >= opened]),
        "gc_after_open_ms": GC_PAUSES.between(opened),
        "routes": dict(Counter(s.route for s in samples)),
        "hung_requests": generate_requests(hung),
        "probes": watch.half_opens,
        "breaker_changes": watch.changes,
        "breaker_state": model.route(PRIMARY).breaker.state,
        "latencies_ms": [round(s.ms, 3) for s in samples],
        "reached_primary_flags": [s.reached_primary for s in samples],
    }


# --------------------------------------------------------------------------- A. sequential


def sequential(servers: Servers, hung: FakeDify, cfg: Config) -> dict[str, Any]:
    """Scenario A: resilient calls and bare relay calls in interleaved batches."""
    model, watch = resilient_model(servers, hung)
    bare = chat_relay(servers)
    fallback = model.route(FALLBACK).runnable
    for relay in (bare, fallback):  # connections and first-call costs, outside the breaker
        for _ in range(cfg.relay_warmup):
            check("ChatRelay.invoke", relay.invoke(PROMPT).content, SHORT_ANSWER)
    hung.reset()
    clock = time.perf_counter
    samples: list[Sample] = []
    relay_ms: list[float] = []
    done = 0
    while done < cfg.calls:
        k = min(cfg.batch, cfg.calls - done)
        for _ in range(k):
            box: list[str] = []
            token = _ADMITTED.set(box)
            start = clock()
            message = model.invoke(PROMPT)
            elapsed = (clock() - start) * 1000
            _ADMITTED.reset(token)
            route = answer_route(message, "ResilientChatModel.invoke")
            samples.append(Sample(start, elapsed, route, PRIMARY in box))
        for _ in range(k):
            start = clock()
            bare.invoke(PROMPT)
            relay_ms.append((clock() - start) * 1000)
        done += k
    result = summarize(samples, hung, model, watch)
    result["relay"] = stats(relay_ms)
    for m in (bare, fallback, model.route(PRIMARY).runnable):
        m.close()
    return result


# --------------------------------------------------------------------------- B. concurrent


async def timed(call: AsyncCall, n: int, concurrency: int) -> list[Sample]:
    """`n` calls, at most `concurrency` in flight.

    A call's latency is measured once it holds the semaphore (its own time, not its wait).
    """
    sem = asyncio.Semaphore(concurrency)
    clock = time.perf_counter
    out: list[Sample] = []

    async def one() -> None:
        box: list[str] = []
        _ADMITTED.set(box)  # this task's context only
        async with sem:
            start = clock()
            route = await call()
            out.append(Sample(start, (clock() - start) * 1000, route, PRIMARY in box))

    await asyncio.gather(*(one() for _ in range(n)))
    return out


def relay_acall(model: ChatRelay) -> AsyncCall:
    async def call() -> str:
        message = await model.ainvoke(PROMPT)
        check("ChatRelay.ainvoke", message.content, SHORT_ANSWER)
        return FALLBACK

    return call


async def relay_round(servers: Servers, cfg: Config, n: int) -> list[float]:
    """Bare ``ChatRelay.ainvoke`` at `cfg.concurrency` in flight, fresh model, warmed up."""
    model = chat_relay(servers)
    try:
        await fire(relay_acall(model), cfg.relay_warmup, cfg.concurrency)
        return [s.ms for s in await timed(relay_acall(model), n, cfg.concurrency)]
    finally:
        await model.aclose()


async def resilient_round(servers: Servers, hung: FakeDify, cfg: Config) -> dict[str, Any]:
    model, watch = resilient_model(servers, hung)
    fallback = model.route(FALLBACK).runnable
    try:
        await fire(relay_acall(fallback), cfg.relay_warmup, cfg.concurrency)
        hung.reset()

        async def call() -> str:
            return answer_route(await model.ainvoke(PROMPT), "ResilientChatModel.ainvoke")

        # The first `calls` start with the breaker closed; `gather` returns once the calls
        # that reached the primary have timed out, so the breaker is open for the next ones.
        samples = await timed(call, cfg.calls, cfg.concurrency)
        samples += await timed(call, cfg.calls, cfg.concurrency)
    finally:
        for route in model.routes:
            await close_model(route.runnable)
    return summarize(samples, hung, model, watch)


def concurrent(servers: Servers, hung: FakeDify, cfg: Config) -> dict[str, Any]:
    """Scenario B, with the bare relay measured right before and right after it."""
    half = cfg.calls // 2
    start = time.perf_counter()
    relay_ms = asyncio.run(relay_round(servers, cfg, half))
    relay_gc = GC_PAUSES.between(start)
    result = asyncio.run(resilient_round(servers, hung, cfg))
    start = time.perf_counter()
    relay_ms += asyncio.run(relay_round(servers, cfg, cfg.calls - half))
    result["relay"] = stats(relay_ms)
    result["relay_gc_ms"] = relay_gc + GC_PAUSES.between(start)
    return result


# --------------------------------------------------------------------------- anchor (in A and B)


def anchor(servers: Servers, hung: FakeDify, cfg: Config) -> dict[str, Any]:
    """LangChain's ``with_fallbacks``: the hung primary is tried on every call."""
    primary, bare_fallback = primary_model(servers, hung), chat_relay(servers)
    chain = primary.with_fallbacks([bare_fallback])
    for _ in range(cfg.relay_warmup):
        bare_fallback.invoke(PROMPT)
    hung.reset()
    latencies = []
    for _ in range(cfg.anchor_calls):
        start = time.perf_counter()
        check("with_fallbacks.invoke", chain.invoke(PROMPT).content, SHORT_ANSWER)
        latencies.append((time.perf_counter() - start) * 1000)
    sequential_result = {**stats(latencies), "hung_requests": generate_requests(hung)}
    primary.close()
    bare_fallback.close()

    async def concurrent_round() -> dict[str, Any]:
        primary, fallback = primary_model(servers, hung), chat_relay(servers)
        chain = primary.with_fallbacks([fallback])
        try:
            await fire(relay_acall(fallback), cfg.relay_warmup, cfg.concurrency)
            hung.reset()

            async def call() -> str:
                message = await chain.ainvoke(PROMPT)
                check("with_fallbacks.ainvoke", message.content, SHORT_ANSWER)
                return FALLBACK

            samples = await timed(call, cfg.anchor_async_calls, cfg.concurrency)
        finally:
            await primary.aclose()
            await fallback.aclose()
        return {
            **stats([s.ms for s in samples]),
            "hung_requests": generate_requests(hung),
        }

    return {"sequential": sequential_result, "concurrent": asyncio.run(concurrent_round())}


# --------------------------------------------------------------------------- C. no failure


BARE = "ChatDify(blocking).invoke"
WRAPPED = "ResilientChatModel(ChatDify(blocking), [ChatRelay]).invoke"


def wrapped_model(servers: Servers) -> ResilientChatModel:
    return ResilientChatModel(chat_dify(servers, response_mode="blocking"), [chat_relay(servers)])


def overhead(servers: Servers, cfg: Config) -> dict[str, Any]:
    """Measurement C: no failure, bare vs wrapped, sequential then async throughput."""
    bare, wrapped = chat_dify(servers, response_mode="blocking"), wrapped_model(servers)
    route = wrapped.invoke(PROMPT).response_metadata["route"]
    check("resilient route", route, "dify")  # the healthy primary answers
    cases = {BARE: invoke_text(bare), WRAPPED: invoke_text(wrapped)}
    for name, call in cases.items():
        check(name, call(), SHORT_ANSWER)
    samples = time_interleaved(cases, cfg.overhead_n, cfg.overhead_warmup, cfg.batch)
    seq = {
        name: {"median_ms": statistics.median(xs), "p90_ms": percentile(xs, 90), "n": len(xs)}
        for name, xs in samples.items()
    }
    ratio = seq[WRAPPED]["median_ms"] / seq[BARE]["median_ms"]

    makers: dict[str, Callable[[], Any]] = {
        BARE.replace(".invoke", ".ainvoke"): lambda: chat_dify(servers, response_mode="blocking"),
        WRAPPED.replace(".invoke", ".ainvoke"): lambda: wrapped_model(servers),
    }
    rounds: dict[str, list[float]] = {name: [] for name in makers}
    for _ in range(cfg.async_rounds):
        for name, make in makers.items():
            rounds[name].append(asyncio.run(throughput_round(make, name, cfg)))
    thr = {
        name: {"calls_per_s": statistics.median(r), "min": min(r), "max": max(r), "rounds": r}
        for name, r in rounds.items()
    }
    names = list(thr)
    thr_ratio = thr[names[1]]["calls_per_s"] / thr[names[0]]["calls_per_s"]
    return {"sequential": seq, "ratio": ratio, "async": thr, "async_ratio": thr_ratio}


async def throughput_round(make: Callable[[], Any], name: str, cfg: Config) -> float:
    """Calls per second of one fresh model at `cfg.async_concurrency` in flight."""
    async with AsyncExitStack() as stack:
        model = make()
        wrapped = isinstance(model, ResilientChatModel)
        for runnable in [r.runnable for r in model.routes] if wrapped else [model]:
            stack.push_async_callback(close_model, runnable)

        async def call() -> None:
            check(name, (await model.ainvoke(PROMPT)).content, SHORT_ANSWER)

        await fire(call, cfg.async_warmup, cfg.async_concurrency)
        start = time.perf_counter()
        await fire(call, cfg.async_n, cfg.async_concurrency)
        return cfg.async_n / (time.perf_counter() - start)


# --------------------------------------------------------------------------- report


def versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def revision() -> str:
    """The commit measured, and whether the library had uncommitted changes."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "dify_lc")
    return f"{commit} + uncommitted changes in dify_lc" if dirty else commit


def header(meta: dict[str, Any]) -> str:
    pkgs = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    return (
        f"dify-lc resilience benchmark — {meta['date']} — Python {meta['python']} — "
        f"{meta['cpus']} CPUs — {pkgs} — commit {meta['revision']}"
        f"{' — gc.freeze()' if meta['gc_freeze'] else ''}{' — QUICK' if meta['quick'] else ''}"
    )


def _ms(s: dict[str, Any], key: str) -> str:
    return f"{s[key]:.2f}" if key in s else "—"


def latency_row(name: str, s: dict[str, Any], hung: object = "—") -> tuple[str, ...]:
    paid = f"{s['paid_timeout']}/{s['n']}" if s["n"] else "—"
    return (
        name,
        str(s["n"]),
        _ms(s, "median_ms"),
        _ms(s, "p90_ms"),
        _ms(s, "p99_ms"),
        _ms(s, "max_ms"),
        paid,
        str(hung),
    )


LATENCY_HEAD = (
    "case",
    "calls",
    "median ms",
    "p90 ms",
    "p99 ms",
    "max ms",
    f"paid timeout (≥ {PAID_S:g} s)",
    "hung primary requests",
)


def scenario_rows(prefix: str, r: dict[str, Any], relay_name: str) -> list[tuple[str, ...]]:
    return [
        latency_row(f"{prefix}: all calls", r["all"], r["hung_requests"]),
        latency_row(f"{prefix}: calls that reached the primary", r["reached_primary"]),
        latency_row(
            f"{prefix}: calls that skipped it before the breaker opened", r["skipped_before_open"]
        ),
        latency_row(f"{prefix}: calls started after the breaker opened", r["after_open"]),
        latency_row(f"{relay_name} (the relay's own latency)", r["relay"]),
    ]


def target_table(targets: Sequence[Target]) -> str:
    return table(
        ("target", "measured", "verdict"),
        [(t.name, t.measured, "met" if t.met else "**MISSED**") for t in targets],
    )


def report(results: dict[str, Any], cfg: Config) -> str:
    a, b, c, d = (results[k] for k in ("sequential", "concurrent", "anchor", "overhead"))
    policy = f"BreakerPolicy(fail_max={FAIL_MAX}, reset_timeout={RESET_TIMEOUT:g})"
    parts = [
        header(results["meta"]),
        "",
        f"Primary: fake Dify that never answers (in-process), `ChatDify(read_timeout={TIMEOUT:g}, "
        f'backend="{PRIMARY}", max_retries=0)`; fallback: healthy fake relay (separate process), '
        f"`ChatRelay`; `ResilientChatModel(..., breaker={policy}, deadline={DEADLINE:g})`.",
        "",
        f"## A. Sequential: {cfg.calls} `invoke` calls, interleaved in batches of {cfg.batch} "
        "with bare `ChatRelay.invoke`",
        "",
        table(
            LATENCY_HEAD,
            [
                *scenario_rows("ResilientChatModel.invoke", a, "ChatRelay.invoke"),
                latency_row(
                    f"anchor: LangChain `with_fallbacks`, {cfg.anchor_calls} calls",
                    c["sequential"],
                    c["sequential"]["hung_requests"],
                ),
            ],
        ),
        "",
        f"Breaker: {' → '.join(a['breaker_changes']) or 'no change'} (now {a['breaker_state']}); "
        f"answered by {_routes(a['routes'])}. Full GC pauses after it opened: "
        f"{_pauses(a['gc_after_open_ms'])}.",
        "",
        target_table(results["targets"]["sequential"]),
        "",
        f"## B. Concurrent: {cfg.calls} `ainvoke` calls at {cfg.concurrency} in flight, "
        f"then {cfg.calls} more once the breaker is open (latency measured from the semaphore)",
        "",
        table(
            LATENCY_HEAD,
            [
                *scenario_rows(
                    "ResilientChatModel.ainvoke",
                    b,
                    f"ChatRelay.ainvoke, {b['relay']['n']} calls before + after",
                ),
                latency_row(
                    f"anchor: LangChain `with_fallbacks`, {cfg.anchor_async_calls} calls",
                    c["concurrent"],
                    c["concurrent"]["hung_requests"],
                ),
            ],
        ),
        "",
        f"Breaker: {' → '.join(b['breaker_changes']) or 'no change'} (now {b['breaker_state']}); "
        f"answered by {_routes(b['routes'])}. Full GC pauses after it opened: "
        f"{_pauses(b['gc_after_open_ms'])}; during the bare relay rounds (warm-up included): "
        f"{_pauses(b['relay_gc_ms'])}.",
        "",
        target_table(results["targets"]["concurrent"]),
        "",
        f"## C. No failure: overhead of the wrapper on a healthy Dify ({cfg.overhead_n} calls "
        f"after {cfg.overhead_warmup} warm-up, interleaved)",
        "",
        table(
            ("case", "median ms", "p90 ms"),
            [
                (name, f"{s['median_ms']:.3f}", f"{s['p90_ms']:.3f}")
                for name, s in d["sequential"].items()
            ],
        ),
        "",
        table(
            (
                f"async, {cfg.async_n} calls at {cfg.async_concurrency} in flight "
                f"(median of {cfg.async_rounds})",
                "calls/s",
                "min – max",
            ),
            [
                (name, f"{s['calls_per_s']:.0f}", f"{s['min']:.0f} – {s['max']:.0f}")
                for name, s in d["async"].items()
            ]
            + [("wrapped / bare (reference, no target)", f"{d['async_ratio']:.2f}×", "")],
        ),
        "",
        target_table(results["targets"]["overhead"]),
        "",
    ]
    targets = [t for group in results["targets"].values() for t in group]
    missed = [t for t in targets if not t.met]
    summary = f"Targets: {len(targets) - len(missed)}/{len(targets)} met"
    if missed:
        summary += " — missed: " + "; ".join(f"{t.name} ({t.measured})" for t in missed)
    parts.append(summary)
    return "\n".join(parts)


def _pauses(pauses: Sequence[float]) -> str:
    return ", ".join(f"{ms:.0f} ms" for ms in pauses) or "none"


def _routes(routes: dict[str, int]) -> str:
    return ", ".join(f"{name} ×{n}" for name, n in sorted(routes.items()))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="few iterations (smoke run)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also save results as JSON")
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="gc.freeze() once set up, as app servers do after start-up: full collections "
        "then skip the imported objects and pause ~2 ms instead of ~100 ms",
    )
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FULL

    results: dict[str, Any] = {
        "meta": {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "versions": versions(),
            "revision": revision(),
            "quick": args.quick,
            "gc_freeze": args.gc_freeze,
        },
        "config": asdict(cfg),
        "constants": {
            "timeout_s": TIMEOUT,
            "fail_max": FAIL_MAX,
            "reset_timeout_s": RESET_TIMEOUT,
            "deadline_s": DEADLINE,
        },
    }
    started = time.perf_counter()
    with ExitStack() as stack:  # stops the servers, also on error
        (servers,) = start_servers(stack, SHORT_ANSWER)
        hung = stack.enter_context(FakeDify(api_key=DIFY_KEY, answer=SHORT_ANSWER))
        hung.set_default(Fault(hang=True))
        if args.gc_freeze:
            gc.collect()
            gc.freeze()
        gc.callbacks.append(GC_PAUSES)
        stack.callback(gc.callbacks.remove, GC_PAUSES)
        results["sequential"] = sequential(servers, hung, cfg)
        results["concurrent"] = concurrent(servers, hung, cfg)
        results["anchor"] = anchor(servers, hung, cfg)
        results["overhead"] = overhead(servers, cfg)
    results["meta"]["duration_s"] = round(time.perf_counter() - started, 1)

    seq_c = results["overhead"]["sequential"]
    ratio = results["overhead"]["ratio"]
    a, b = results["sequential"], results["concurrent"]
    targets = {
        "sequential": [
            *latency_targets(
                "A, after the breaker opened",
                a["after_open"],
                a["relay"]["median_ms"],
                a["gc_after_open_ms"],
            ),
            requests_target("A", a),
        ],
        "concurrent": [
            *latency_targets(
                "B, after the breaker opened",
                b["after_open"],
                b["relay"]["median_ms"],
                b["gc_after_open_ms"],
            ),
            requests_target("B", b),
        ],
        "overhead": [
            Target(
                f"no failure: wrapped / bare ChatDify median ≤ {OVERHEAD_TARGET:.2f}×",
                f"{seq_c[WRAPPED]['median_ms']:.3f} ms / {seq_c[BARE]['median_ms']:.3f} ms "
                f"= {ratio:.4f}×",
                ratio <= OVERHEAD_TARGET,
            )
        ],
    }
    results["targets"] = targets
    print(report(results, cfg))
    print(f"\n(total {results['meta']['duration_s']} s)")
    if args.json is not None:
        serial = {**results, "targets": {k: [asdict(t) for t in v] for k, v in targets.items()}}
        args.json.write_text(json.dumps(serial, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
