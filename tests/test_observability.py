"""Events, redaction, metrics and cost of the resilient layer."""

from __future__ import annotations

import io
import json
import logging
import random
import tracemalloc
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from langchain_core.messages import AIMessage
from test_resilient import FakeClock, Scripted, resilient, rl

from dify_lc import (
    BreakerPolicy,
    ChatDify,
    Metrics,
    Price,
    PriceTable,
    ResilientChatModel,
    configure_logging,
)
from dify_lc.errors import AuthenticationError, ServerError
from dify_lc.observability.histogram import LogHistogram
from dify_lc.observability.log import EVENTS_LOGGER
from dify_lc.observability.prices import cost_of
from dify_lc.observability.redaction import redact, redact_text, register_secret
from dify_lc.testing import FakeDify, Fault

SECRET = "app-observability-secret-0123456789"


def _by(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == name]


class _capture_into:
    def __init__(self, sink: list[dict[str, Any]]) -> None:
        self.sink = sink

    def __enter__(self) -> None:
        self.stream = io.StringIO()
        self.handler = configure_logging(json=True, stream=self.stream)

    def __exit__(self, *exc: object) -> None:
        root = logging.getLogger("dify_lc")
        root.removeHandler(self.handler)
        root.setLevel(logging.NOTSET)
        root.propagate = True
        self.sink.extend(json.loads(x) for x in self.stream.getvalue().splitlines() if x)


def capture() -> tuple[list[dict[str, Any]], _capture_into]:
    sink: list[dict[str, Any]] = []
    return sink, _capture_into(sink)


def test_attempt_and_call_events_for_retry_then_fallback() -> None:
    clock = FakeClock()
    primary = Scripted(
        backend="primary",
        script=[rl(1.0), AuthenticationError("k", status=401)],
        clock=clock,
        cost=0.5,
    )
    relay = Scripted(backend="relay", script=[], default="relay", clock=clock, cost=0.25)
    model = resilient(primary, relay, clock=clock)
    sink, cm = capture()
    with cm:
        model.invoke("hi", user="u1")
    attempts = _by(sink, "llm.attempt")
    assert [(a["route"], a["outcome"], a.get("error_type")) for a in attempts] == [
        ("primary", "error", "RateLimitError"),
        ("primary", "error", "AuthenticationError"),
        ("relay", "ok", None),
    ]
    assert [a["attempt"] for a in attempts] == [1, 2, 3]
    assert attempts[0]["status"] == 429
    assert attempts[0]["latency_ms"] == pytest.approx(500.0)
    assert attempts[2]["latency_ms"] == pytest.approx(250.0)
    assert attempts[2]["breaker_state"] == "closed"
    assert len({a["request_id"] for a in attempts}) == 1
    (call,) = _by(sink, "llm.call")
    assert call["route"] == "relay"
    assert call["outcome"] == "ok"
    assert call["attempts"] == 3
    assert call["request_id"] == attempts[0]["request_id"]
    assert call["latency_ms"] == pytest.approx(500 + 1000 + 500 + 250)  # incl. the 1 s retry wait


def test_breaker_open_and_failed_call_events() -> None:
    clock = FakeClock()
    primary = Scripted(
        backend="primary", script=[], default=ServerError("x", retryable=False), clock=clock
    )
    relay = Scripted(
        backend="relay", script=[], default=ServerError("y", retryable=False), clock=clock
    )
    model = resilient(primary, relay, clock=clock, breaker=BreakerPolicy(fail_max=1))
    sink, cm = capture()
    with cm:
        for _ in range(2):
            with pytest.raises(Exception, match="all routes failed"):
                model.invoke("hi")
    attempts = _by(sink, "llm.attempt")
    assert [a["outcome"] for a in attempts] == ["error", "error", "skipped", "skipped"]
    assert attempts[0]["breaker_state"] == "open"
    calls = _by(sink, "llm.call")
    assert [c["outcome"] for c in calls] == ["error", "error"]
    assert calls[-1]["error_type"] == "AllRoutesFailedError"


def test_stream_events_carry_time_to_first_token_and_usage() -> None:
    with FakeDify(api_key=SECRET, chunk_delay=0.01, first_token_delay=0.05) as dify:
        model = ResilientChatModel(
            ChatDify(api_key=SECRET, base_url=dify.base_url, backend="official")
        )
        sink, cm = capture()
        with cm:
            text = "".join(str(c.content) for c in model.stream("hi"))
        assert text
        (call,) = _by(sink, "llm.call")
        assert call["ttft_ms"] >= 40
        assert call["latency_ms"] > call["ttft_ms"]
        assert call["tokens_out"] > 0
        (attempt,) = _by(sink, "llm.attempt")
        assert attempt["conversation_id"]
        assert attempt["message_id"]
        snap = model.metrics.snapshot()  # type: ignore[union-attr]
        assert snap["routes"]["official"]["ttft_ms"]["p50"] >= 40
        assert snap["calls"]["calls"] == 1


def test_logging_off_writes_nothing_and_needs_no_handler() -> None:
    assert not EVENTS_LOGGER.isEnabledFor(logging.INFO)  # the library configures nothing
    clock = FakeClock()
    model = resilient(Scripted(backend="p", script=[], clock=clock), clock=clock)
    model.invoke("hi")  # no handler, no output, no error
    assert model.metrics.snapshot()["calls"]["calls"] == 1  # type: ignore[union-attr]


# --------------------------------------------------------------------------- redaction


def test_keys_never_reach_a_log_line() -> None:
    register_secret(SECRET)
    sink, cm = capture()
    with cm:
        log = logging.getLogger("dify_lc.user")
        log.info("request headers %s", {"Authorization": f"Bearer {SECRET}"})
        log.info("raw key %s and %r", SECRET, SECRET.upper().lower())
        log.warning("response %s", {"api_key": SECRET, "x-api-key": "whatever-value-123"})
        try:
            raise RuntimeError(f"upstream said: invalid key {SECRET}")
        except RuntimeError:
            log.exception("call failed")
        model = ChatDify(api_key=SECRET, base_url="http://127.0.0.1:9/v1", max_retries=0)
        log.info("model %r", model)
        log.info("settings %s", model.model_dump())
        with pytest.raises(Exception) as info:
            model.invoke("hi")
        log.error("failed: %s", info.value, exc_info=info.value)
    text = json.dumps(sink)
    assert sink, "nothing was logged"
    assert SECRET not in text
    assert "whatever-value-123" not in text


def test_redact_helpers() -> None:
    assert redact_text("Authorization: Bearer abc.def-123") == "Authorization: Bearer ***"
    assert "sk-" not in redact_text("key sk-proj-ABCDEFGHIJKLMNOP")
    nested = redact({"headers": {"authorization": "x"}, "items": [f"k={SECRET}"], "n": 3})
    assert nested == {"headers": {"authorization": "***"}, "items": ["k=***"], "n": 3}


# --------------------------------------------------------------------------- metrics


@pytest.mark.parametrize("seed", [1, 2])
def test_percentiles_match_numpy_within_bucket_error(seed: int) -> None:
    rng = random.Random(seed)
    samples = [rng.lognormvariate(6.5, 1.2) for _ in range(20_000)]
    h = LogHistogram()
    for x in samples:
        h.record(x)
    for q in (50, 95, 99):
        exact = float(np.percentile(samples, q, method="inverted_cdf"))
        assert h.percentile(q) == pytest.approx(exact, rel=0.03)
    assert h.percentile(0) == pytest.approx(min(samples))
    assert h.percentile(100) == pytest.approx(max(samples))


def test_metrics_per_route_backend_and_call() -> None:
    m = Metrics()
    for i in range(10):
        m.record(
            route="official",
            backend="dify",
            ok=i % 2 == 0,
            latency_ms=100.0 + i,
            error_type="ServerError",
            tokens_in=3,
            tokens_out=5,
            cost=0.01,
        )
    snap = m.snapshot()
    official = snap["routes"]["official"]
    assert official["calls"] == 10
    assert official["success_rate"] == 0.5
    assert official["errors"] == {"ServerError": 5}
    assert official["tokens_in"] == 30
    assert official["cost"] == pytest.approx(0.1)
    assert snap["backends"]["dify"]["calls"] == 10
    json.dumps(snap)  # plain data


def test_memory_stays_flat_over_100k_calls() -> None:
    m = Metrics()
    for i in range(1_000):
        m.record(route="r", backend="b", ok=True, latency_ms=float(i % 5000), ttft_ms=1.0)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for i in range(100_000):
        m.record(
            route="r",
            backend="b",
            ok=i % 7 != 0,
            latency_ms=float(i % 5000),
            ttft_ms=2.0,
            error_type="X",
        )
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert grown < 64 * 1024  # bytes: fixed-size histograms, not growing lists


def test_metrics_are_thread_safe() -> None:
    import threading

    m = Metrics()

    def work() -> None:
        for _ in range(5_000):
            m.record(route="r", backend="b", ok=True, latency_ms=1.0)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert m.snapshot()["routes"]["r"]["calls"] == 40_000


# --------------------------------------------------------------------------- cost


def test_cost_prefers_dify_price_then_litellm_then_table() -> None:
    dify_msg = AIMessage(
        "x", response_metadata={"usage": {"total_price": Decimal("0.0012890"), "currency": "USD"}}
    )
    assert cost_of(dify_msg, None) == (pytest.approx(0.001289), "USD")
    litellm = AIMessage("x", response_metadata={"token_usage": {"cost": 0.5}})
    assert cost_of(litellm, None) == (0.5, "USD")
    table = PriceTable({"gpt-4o": Price(2.5, 10.0)})
    msg = AIMessage(
        "x",
        response_metadata={"model_name": "gpt-4o"},
        usage_metadata={"input_tokens": 1000, "output_tokens": 100, "total_tokens": 1100},
    )
    assert cost_of(msg, table) == (pytest.approx(0.0025 + 0.001), "USD")
    assert cost_of(msg, None) == (0.0, None)


def test_breaker_open_counts_in_events_for_a_hung_backend() -> None:
    with FakeDify(api_key=SECRET) as dify:
        dify.set_default(Fault(hang=True))
        primary = ChatDify(
            api_key=SECRET, base_url=dify.base_url, read_timeout=0.1, backend="official"
        )
        model = ResilientChatModel(primary, breaker=BreakerPolicy(fail_max=1), deadline=2)
        sink, cm = capture()
        with cm:
            for _ in range(2):
                with pytest.raises(Exception, match="all routes failed"):
                    model.invoke("hi")
        outcomes = [a["outcome"] for a in _by(sink, "llm.attempt")]
        assert outcomes == ["error", "skipped"]
        assert SECRET not in json.dumps(sink)


def test_breaker_state_changes_are_events() -> None:
    clock = FakeClock()
    primary = Scripted(
        backend="primary", script=[], default=ServerError("x", retryable=False), clock=clock
    )
    model = resilient(primary, clock=clock, breaker=BreakerPolicy(fail_max=1, reset_timeout=5))
    sink, cm = capture()
    with cm:
        with pytest.raises(Exception, match="all routes failed"):
            model.invoke("hi")
        clock.now += 6
        primary.default = "back"
        model.invoke("hi")
    changes = [(e["from"], e["to"]) for e in _by(sink, "breaker.state")]
    assert changes == [("closed", "open"), ("open", "half-open"), ("half-open", "closed")]


def test_callback_handler_measures_any_chat_model() -> None:
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate

    from dify_lc import MetricsCallbackHandler

    handler = MetricsCallbackHandler()
    prompt = ChatPromptTemplate.from_messages([("human", "{q}")])
    third_party = GenericFakeChatModel(messages=iter([AIMessage("a b c"), AIMessage("d e")]))
    sink, cm = capture()
    with cm, FakeDify(api_key=SECRET) as dify:
        ours = ChatDify(api_key=SECRET, base_url=dify.base_url, backend="official")
        (prompt | ours | StrOutputParser()).invoke({"q": "hi"}, config={"callbacks": [handler]})
        list((prompt | ours).stream({"q": "hi"}, config={"callbacks": [handler]}))
        (prompt | third_party).invoke({"q": "hi"}, config={"callbacks": [handler]})
        list((prompt | third_party).stream({"q": "hi"}, config={"callbacks": [handler]}))
    snap = handler.metrics.snapshot()["backends"]
    assert snap["official"]["calls"] == 2
    assert snap["official"]["tokens_out"] > 0
    assert snap["official"]["ttft_ms"]["p50"] is not None  # the streamed call
    assert sum(v["calls"] for k, v in snap.items() if k != "official") == 2
    calls = _by(sink, "llm.call")
    assert len(calls) == 4
    assert all(c["source"] == "callback" for c in calls)
    assert SECRET not in json.dumps(sink)
