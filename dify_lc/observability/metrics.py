"""In-process metrics per route and per backend, in bounded memory, thread- and task-safe."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from dify_lc.observability.histogram import LogHistogram

__all__ = ["Metrics"]


@dataclass(slots=True)
class _Series:
    calls: int = 0
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latency: LogHistogram = field(default_factory=LogHistogram)
    ttft: LogHistogram = field(default_factory=LogHistogram)
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0

    def add(
        self,
        ok: bool,
        latency_ms: float,
        ttft_ms: float | None,
        error_type: str | None,
        tokens_in: int,
        tokens_out: int,
        cost: float,
    ) -> None:
        self.calls += 1
        if ok:
            self.ok += 1
        elif error_type:
            self.errors[error_type] += 1
        self.latency.record(latency_ms)
        if ttft_ms is not None:
            self.ttft.record(ttft_ms)
        self.tokens_in += tokens_in
        self.tokens_out += tokens_out
        self.cost += cost

    def view(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "ok": self.ok,
            "success_rate": self.ok / self.calls if self.calls else None,
            "errors": dict(self.errors),
            "latency_ms": _quantiles(self.latency),
            "ttft_ms": _quantiles(self.ttft),
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "cost": self.cost,
        }


def _quantiles(h: LogHistogram) -> dict[str, float | None]:
    return {
        "p50": h.percentile(50),
        "p95": h.percentile(95),
        "p99": h.percentile(99),
        "mean": h.mean,
        "max": h.max if h.count else None,
    }


class Metrics:
    """Counts, success rate, latency and TTFT percentiles, error types, tokens and cost.

    Kept per route and per backend; memory is fixed per series (histograms, not lists of
    samples), whatever the number of calls. ``record`` takes one short lock; ``snapshot``
    returns plain data (dicts of numbers) safe to serialise.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._routes: dict[str, _Series] = {}
        self._backends: dict[str, _Series] = {}
        self._calls = _Series()

    def record(
        self,
        *,
        route: str | None,
        backend: str | None,
        ok: bool,
        latency_ms: float,
        ttft_ms: float | None = None,
        error_type: str | None = None,
        tokens_in: int = 0,
        tokens_out: int = 0,
        cost: float = 0.0,
    ) -> None:
        """Record one call (or one attempt) outcome."""
        args = (ok, latency_ms, ttft_ms, error_type, tokens_in, tokens_out, cost)
        with self._lock:
            if route is not None:
                series = self._routes.get(route)
                if series is None:
                    series = self._routes[route] = _Series()
                series.add(*args)
            if backend is not None:
                series = self._backends.get(backend)
                if series is None:
                    series = self._backends[backend] = _Series()
                series.add(*args)

    def record_call(
        self,
        *,
        ok: bool,
        latency_ms: float,
        ttft_ms: float | None = None,
        error_type: str | None = None,
        tokens_in: int = 0,
        tokens_out: int = 0,
        cost: float = 0.0,
    ) -> None:
        """Record one logical call (all its attempts and fallbacks) as the caller saw it."""
        with self._lock:
            self._calls.add(ok, latency_ms, ttft_ms, error_type, tokens_in, tokens_out, cost)

    def snapshot(self) -> dict[str, Any]:
        """``{"calls": stats, "routes": {name: stats}, "backends": {name: stats}}``, plain data.

        Routes and backends count attempts (each backend's own health); ``calls`` counts
        logical calls (what the caller saw after retries and fallbacks).
        """
        with self._lock:
            return {
                "calls": self._calls.view(),
                "routes": {k: v.view() for k, v in self._routes.items()},
                "backends": {k: v.view() for k, v in self._backends.items()},
            }

    def reset(self) -> None:
        with self._lock:
            self._routes.clear()
            self._backends.clear()
            self._calls = _Series()
