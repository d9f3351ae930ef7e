"""A LangChain callback handler that measures any chat model the way dify-lc measures its own."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.outputs import LLMResult

from dify_lc.observability.log import emit, enabled
from dify_lc.observability.metrics import Metrics
from dify_lc.observability.prices import PriceTable, cost_of

__all__ = ["MetricsCallbackHandler"]


class MetricsCallbackHandler(BaseCallbackHandler):
    """Records every chat-model run in a chain: an ``llm.call`` event and :class:`Metrics`.

    Works for any chat model (``ChatOpenAI`` as well as ours), so channels can be compared
    side by side. The backend label is the model's ``backend`` when it has one, else its
    LangChain provider (``ls_provider``), else its class name.

    Example:
        .. code-block:: python

            handler = MetricsCallbackHandler()
            chain.invoke(question, config={"callbacks": [handler]})
            handler.metrics.snapshot()
    """

    raise_error = False
    run_inline = True  # keep ordering on the caller's thread/loop; the work here is tiny

    def __init__(self, metrics: Metrics | None = None, prices: PriceTable | None = None) -> None:
        self.metrics = metrics if metrics is not None else Metrics()
        self.prices = prices
        self._lock = threading.Lock()
        self._runs: dict[UUID, list[Any]] = {}  # run id → [start, first token at, backend, model]

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[Any]],
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        invocation_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        params = invocation_params or {}
        meta = metadata or {}
        backend = (
            params.get("backend")
            or meta.get("ls_provider")
            or (serialized or {}).get("name")
            or "unknown"
        )
        model = meta.get("ls_model_name") or params.get("model") or params.get("model_name")
        with self._lock:
            self._runs[run_id] = [time.perf_counter(), None, str(backend), model]

    def on_llm_new_token(
        self, token: str | list[str | dict[str, Any]], *, run_id: UUID, **kwargs: Any
    ) -> None:
        if not token:
            return
        run = self._runs.get(run_id)
        if run is not None and run[1] is None:
            run[1] = time.perf_counter()

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            run = self._runs.pop(run_id, None)
        if run is None:
            return
        message = None
        if response.generations and response.generations[0]:
            message = getattr(response.generations[0][0], "message", None)
        self._finish(run, run_id, message=message)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            run = self._runs.pop(run_id, None)
        if run is not None:
            self._finish(run, run_id, error=error)

    def _finish(
        self,
        run: list[Any],
        run_id: UUID,
        *,
        message: Any = None,
        error: BaseException | None = None,
    ) -> None:
        start, first, backend, model = run
        now = time.perf_counter()
        latency_ms = (now - start) * 1000.0
        ttft_ms = None if first is None else (first - start) * 1000.0
        usage = getattr(message, "usage_metadata", None) or {}
        tokens_in = int(usage.get("input_tokens", 0))
        tokens_out = int(usage.get("output_tokens", 0))
        cost, currency = cost_of(message, self.prices) if message is not None else (0.0, None)
        error_type = None if error is None else type(error).__name__
        self.metrics.record(
            route=None,
            backend=backend,
            ok=error is None,
            latency_ms=latency_ms,
            ttft_ms=ttft_ms,
            error_type=error_type,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            cost=cost,
        )
        if not enabled():
            return
        fields: dict[str, Any] = {
            "request_id": uuid.UUID(int=run_id.int).hex,
            "backend": backend,
            "model": model,
            "outcome": "ok" if error is None else "error",
            "latency_ms": round(latency_ms, 3),
            "ttft_ms": None if ttft_ms is None else round(ttft_ms, 3),
            "tokens_in": tokens_in,
            "tokens_out": tokens_out,
            "cost": cost,
            "currency": currency,
            "source": "callback",
        }
        if error is not None:
            fields["error_type"] = error_type
            fields["error"] = str(error)[:300]
        emit("llm.call", fields)
