"""Prometheus export of the same metrics (optional extra: ``pip install 'dify-lc[prometheus]'``).

:class:`PrometheusMetrics` is a :class:`~dify_lc.observability.metrics.Metrics` that also feeds
prometheus-client series; :func:`watch_breakers` exposes breaker states read at scrape time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - depends on the extra
    raise ImportError(
        "dify_lc.observability.prometheus needs prometheus-client: "
        "pip install 'dify-lc[prometheus]'"
    ) from exc

from dify_lc.observability.metrics import Metrics

__all__ = ["LATENCY_BUCKETS", "PrometheusMetrics", "watch_breakers"]

# Seconds. LLM calls run from ~100 ms (cached, tiny) to minutes (long answers, stuck channels):
# fine steps where SLOs sit (0.5–10 s), a few coarse ones up to 5 minutes.
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 120, 300)
TTFT_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 20, 30, 60)
_STATE_VALUE = {"closed": 0.0, "half-open": 1.0, "open": 2.0}


class PrometheusMetrics(Metrics):
    """In-process metrics (``snapshot()``) plus Prometheus series, updated together.

    Series (prefix ``namespace``, default ``dify_lc``): ``attempts_total{route,backend,outcome}``,
    ``errors_total{route,backend,error_type}``, ``attempt_latency_seconds{route,backend}``,
    ``ttft_seconds{route,backend}``, ``tokens_total{route,backend,direction}``,
    ``cost_total{route,backend}``, ``calls_total{outcome}``, ``call_latency_seconds``.
    """

    def __init__(
        self, registry: CollectorRegistry | None = None, *, namespace: str = "dify_lc"
    ) -> None:
        super().__init__()
        reg = REGISTRY if registry is None else registry
        labels = ("route", "backend")
        self._attempts = Counter(
            "attempts",
            "Attempts by outcome",
            (*labels, "outcome"),
            namespace=namespace,
            registry=reg,
        )
        self._errors = Counter(
            "errors",
            "Failed attempts by error type",
            (*labels, "error_type"),
            namespace=namespace,
            registry=reg,
        )
        self._latency = Histogram(
            "attempt_latency_seconds",
            "Attempt latency",
            labels,
            namespace=namespace,
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self._ttft = Histogram(
            "ttft_seconds",
            "Time to first token",
            labels,
            namespace=namespace,
            buckets=TTFT_BUCKETS,
            registry=reg,
        )
        self._tokens = Counter(
            "tokens", "Tokens", (*labels, "direction"), namespace=namespace, registry=reg
        )
        self._cost = Counter(
            "cost", "Cost (currency units)", labels, namespace=namespace, registry=reg
        )
        self._call_count = Counter(
            "calls", "Logical calls by outcome", ("outcome",), namespace=namespace, registry=reg
        )
        self._call_latency = Histogram(
            "call_latency_seconds",
            "Logical call latency (all attempts and fallbacks)",
            namespace=namespace,
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )

    def record(self, **kw: Any) -> None:
        super().record(**kw)
        route, backend = kw.get("route") or "", kw.get("backend") or ""
        ok = kw["ok"]
        self._attempts.labels(route, backend, "ok" if ok else "error").inc()
        if not ok and kw.get("error_type"):
            self._errors.labels(route, backend, kw["error_type"]).inc()
        self._latency.labels(route, backend).observe(kw["latency_ms"] / 1000.0)
        if kw.get("ttft_ms") is not None:
            self._ttft.labels(route, backend).observe(kw["ttft_ms"] / 1000.0)
        if kw.get("tokens_in"):
            self._tokens.labels(route, backend, "in").inc(kw["tokens_in"])
        if kw.get("tokens_out"):
            self._tokens.labels(route, backend, "out").inc(kw["tokens_out"])
        if kw.get("cost"):
            self._cost.labels(route, backend).inc(kw["cost"])

    def record_call(self, **kw: Any) -> None:
        super().record_call(**kw)
        self._call_count.labels("ok" if kw["ok"] else "error").inc()
        self._call_latency.observe(kw["latency_ms"] / 1000.0)


class _BreakerCollector(Collector):
    def __init__(self, models: Iterable[Any], namespace: str) -> None:
        self.models = list(models)
        self.name = f"{namespace}_breaker_state"

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily(
            self.name, "Breaker state per route: 0 closed, 1 half-open, 2 open", labels=["route"]
        )
        for model in self.models:
            for route in model.routes:
                gauge.add_metric([route.name], _STATE_VALUE.get(route.breaker.state, -1.0))
        yield gauge


def watch_breakers(
    *models: Any, registry: CollectorRegistry | None = None, namespace: str = "dify_lc"
) -> None:
    """Expose the breaker state of every route of these resilient models (read at scrape)."""
    (REGISTRY if registry is None else registry).register(_BreakerCollector(models, namespace))
