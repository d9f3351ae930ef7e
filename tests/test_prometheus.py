"""Prometheus export: a real /metrics endpoint on loopback, scraped over HTTP."""

from __future__ import annotations

import httpx
from prometheus_client import CollectorRegistry, start_http_server
from test_resilient import FakeClock, Scripted

from dify_lc import BreakerPolicy, ResilientChatModel
from dify_lc.errors import ServerError
from dify_lc.observability.prometheus import PrometheusMetrics, watch_breakers


def test_scrape_real_metrics_endpoint() -> None:
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    clock = FakeClock()
    primary = Scripted(
        backend="official",
        script=[],
        default=ServerError("x", retryable=False),
        clock=clock,
        cost=0.2,
    )
    relay = Scripted(backend="relay", script=[], default="ok", clock=clock, cost=0.05)
    model = ResilientChatModel(primary, [relay], metrics=metrics, breaker=BreakerPolicy(fail_max=2))
    model.use_clock(clock, sleep=clock.sleep)
    for _ in range(4):
        model.invoke("hi")
    watch_breakers(model, registry=registry)
    server, _thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        text = httpx.get(f"http://127.0.0.1:{server.server_port}/metrics").text
    finally:
        server.shutdown()
        server.server_close()
    assert 'dify_lc_attempts_total{backend="official",outcome="error",route="official"} 2.0' in text
    assert 'dify_lc_attempts_total{backend="relay",outcome="ok",route="relay"} 4.0' in text
    assert (
        'dify_lc_errors_total{backend="official",error_type="ServerError",route="official"} 2.0'
        in text
    )
    assert (
        'dify_lc_attempt_latency_seconds_bucket{backend="relay",le="0.1",route="relay"} 4.0' in text
    )
    assert 'dify_lc_calls_total{outcome="ok"} 4.0' in text
    assert 'dify_lc_breaker_state{route="official"} 2.0' in text  # open
    assert 'dify_lc_breaker_state{route="relay"} 0.0' in text
    assert metrics.snapshot()["calls"]["calls"] == 4  # the in-process view agrees
