"""What observability costs per call: events, metrics, and logging switched off.

    python benchmarks/bench_observability.py [--n 20000]

Measures (median of repeated batches, in µs per call):
1. ``Metrics.record`` alone;
2. one ``llm.attempt`` + one ``llm.call`` event and their metrics, as the resilient layer does
   per successful call, with JSON logging on (to a null stream) and with logging off;
3. a full ``ResilientChatModel.invoke`` over a no-I/O chat model, with metrics+events (logging
   off) versus ``metrics=False``: the cost a user pays when they do not look at logs.
Target (issue #4): recording an event and a metric ≤ 50 µs per call; logging off: nothing
measurable.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage

from dify_lc import Metrics, ResilientChatModel, configure_logging
from dify_lc.resilience.breaker import Breaker
from dify_lc.resilience.plan import FallbackPlan, Outcome, Route
from dify_lc.resilience.recorder import Recorder
from dify_lc.resilience.retry import RetryPolicy


def per_call_us(fn: Callable[[], Any], n: int, batches: int = 7) -> float:
    for _ in range(min(n, 1000)):
        fn()
    results = []
    for _ in range(batches):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        results.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(results)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    args = parser.parse_args()
    n = args.n

    metrics = Metrics()
    record = per_call_us(
        lambda: metrics.record(
            route="r",
            backend="b",
            ok=True,
            latency_ms=123.0,
            ttft_ms=40.0,
            tokens_in=10,
            tokens_out=20,
            cost=0.001,
        ),
        n,
    )

    route = Route("official", FakeListChatModel(responses=["x"]), Breaker("official"))
    message = AIMessage(
        "answer",
        usage_metadata={"input_tokens": 10, "output_tokens": 20, "total_tokens": 30},
        response_metadata={"conversation_id": "c", "message_id": "m"},
    )
    recorder = Recorder(Metrics())
    plan = FallbackPlan([route], RetryPolicy(), None, request_id="0" * 32, bucket=0.42)
    outcome = Outcome(route, "ok", None, 0.123, 1, message)

    def one_call() -> None:
        recorder.attempt(plan, outcome)
        recorder.call(plan, result=message)

    def one_event() -> None:
        recorder.attempt(plan, outcome)  # one llm.attempt event and its metric

    off = per_call_us(one_call, n)
    with open(os.devnull, "w") as devnull:
        handler = configure_logging(json=True, stream=devnull)
        on = per_call_us(one_call, n // 4)
        event_on = per_call_us(one_event, n // 4)
        logging.getLogger("dify_lc").removeHandler(handler)
    logging.getLogger("dify_lc").setLevel(logging.WARNING)

    fake = FakeListChatModel(responses=["answer"])
    with_obs = ResilientChatModel(fake)
    without = ResilientChatModel(FakeListChatModel(responses=["answer"]), metrics=False)
    # Interleaved rounds: the two whole-call cases see the same machine state.
    ons, offs = [], []
    for _ in range(5):
        ons.append(per_call_us(lambda: with_obs.invoke("hi"), n // 50, batches=3))
        offs.append(per_call_us(lambda: without.invoke("hi"), n // 50, batches=3))
    full_on, full_off = statistics.median(ons), statistics.median(offs)

    print(
        f"dify-lc observability benchmark — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
        f" — Python {sys.version.split()[0]} — {os.cpu_count()} CPUs\n"
    )
    print("| measurement | µs per call (median) | target |")
    print("|---|---|---|")
    print(f"| Metrics.record | {record:.2f} | — |")
    print(f"| one event and its metric, JSON logging on | {event_on:.2f} | ≤ 50 |")
    print(f"| a call's two events (attempt + call) and metrics, JSON logging on | {on:.2f} | — |")
    print(f"| a call's events and metrics, logging off | {off:.2f} | — |")
    print(f"| ResilientChatModel.invoke, no-I/O model, metrics on | {full_on:.1f} | — |")
    print(f"| ResilientChatModel.invoke, no-I/O model, metrics=False | {full_off:.1f} | — |")
    print(
        f"\nlogging-off overhead of a whole call: {full_on - full_off:+.1f} µs "
        f"({(full_on / full_off - 1) * 100:+.1f}%)"
    )
    verdict = "met" if event_on <= 50 else "MISSED"
    print(f"verdict: one event and a metric with logging on: {verdict} (≤ 50 µs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
