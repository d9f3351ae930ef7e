"""Attempt outcomes and finished calls → ``llm.attempt`` / ``llm.call`` events and metrics."""

from __future__ import annotations

import uuid
from typing import Any

from dify_lc.errors import DifyLCError
from dify_lc.observability.log import emit, enabled
from dify_lc.observability.metrics import Metrics
from dify_lc.observability.prices import PriceTable, cost_of
from dify_lc.resilience.plan import FallbackPlan, Outcome

__all__ = ["Recorder"]


def model_name_of(runnable: Any) -> str | None:
    for attr in ("model", "model_name"):
        value = getattr(runnable, attr, None)
        if isinstance(value, str):
            return value
    return None


def _usage(message: Any) -> tuple[int, int]:
    usage = getattr(message, "usage_metadata", None) or {}
    return int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))


def _error_fields(error: BaseException | None) -> dict[str, Any]:
    if error is None:
        return {}
    fields: dict[str, Any] = {"error_type": type(error).__name__}
    if isinstance(error, DifyLCError):
        fields["error_code"] = error.code
        fields["status"] = error.status
        fields["error"] = error.message[:300]
    return fields


class Recorder:
    """The observer of a resilient model's plans (one per model)."""

    __slots__ = ("metrics", "prices")

    def __init__(self, metrics: Metrics | None, prices: PriceTable | None = None) -> None:
        self.metrics = metrics
        self.prices = prices

    def attempt(self, plan: FallbackPlan, outcome: Outcome) -> None:
        """Observer hook: one attempt of ``plan`` ended."""
        route = outcome.route
        backend = getattr(route.runnable, "backend", None) or route.name
        ok = outcome.kind == "ok"
        tokens_in, tokens_out = _usage(outcome.result) if ok else (0, 0)
        cost = cost_of(outcome.result, self.prices)[0] if ok else 0.0
        latency_ms = outcome.elapsed * 1000.0
        ttft_ms = None
        if ok and plan.first_token_at is not None:
            ttft_ms = (plan.first_token_at - plan.started) * 1000.0
        metrics = self.metrics
        if metrics is not None and outcome.kind in ("ok", "error", "interrupted"):
            metrics.record(
                route=route.name,
                backend=backend,
                ok=ok,
                latency_ms=latency_ms,
                ttft_ms=ttft_ms,
                error_type=None if ok else type(outcome.error).__name__,
                tokens_in=tokens_in,
                tokens_out=tokens_out,
                cost=cost,
            )
        if not enabled():
            return
        if not plan.request_id:
            plan.request_id = uuid.uuid4().hex  # only when an event is written
        fields: dict[str, Any] = {
            "request_id": plan.request_id,
            "route": route.name,
            "backend": backend,
            "model": model_name_of(route.runnable),
            "attempt": outcome.attempt,
            "outcome": outcome.kind,
            "latency_ms": round(latency_ms, 3),
            "breaker_state": route.breaker.state,
            "bucket": plan.bucket,
            **_error_fields(outcome.error),
        }
        if ok:
            meta = getattr(outcome.result, "response_metadata", None) or {}
            fields.update(
                tokens_in=tokens_in,
                tokens_out=tokens_out,
                cost=cost,
                ttft_ms=None if ttft_ms is None else round(ttft_ms, 3),
                conversation_id=meta.get("conversation_id"),
                message_id=meta.get("message_id"),
            )
        emit("llm.attempt", fields)

    def call(
        self, plan: FallbackPlan, *, result: Any = None, error: BaseException | None = None
    ) -> None:
        """The logical call ended (answered, or raised ``error``)."""
        latency_ms = (plan.clock() - plan.started) * 1000.0
        if self.metrics is not None:
            tokens_in, tokens_out = _usage(result)
            self.metrics.record_call(
                ok=error is None,
                latency_ms=latency_ms,
                error_type=None if error is None else type(error).__name__,
                tokens_in=tokens_in,
                tokens_out=tokens_out,
            )
        if not enabled():
            return
        if not plan.request_id:
            plan.request_id = uuid.uuid4().hex
        ttft = plan.first_token_at
        fields: dict[str, Any] = {
            "request_id": plan.request_id,
            "route": plan.served.name if plan.served else None,
            "outcome": "ok" if error is None else "error",
            "attempts": len(plan.attempts) + (1 if error is None else 0),
            "latency_ms": round(latency_ms, 3),
            "ttft_ms": None if ttft is None else round((ttft - plan.started) * 1000.0, 3),
            "bucket": plan.bucket,
            **_error_fields(error),
        }
        if result is not None:
            tokens_in, tokens_out = _usage(result)
            cost, currency = cost_of(result, self.prices)
            fields.update(tokens_in=tokens_in, tokens_out=tokens_out, cost=cost, currency=currency)
        emit("llm.call", fields)
