"""DifyWorkflow: a LangChain Runnable over a Dify workflow app (``POST /workflows/run``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForChainRun, CallbackManagerForChainRun
from langchain_core.runnables import RunnableConfig, RunnableSerializable
from langchain_core.utils import from_env, secret_from_env
from pydantic import ConfigDict, Field, SecretStr

from dify_lc.driver import Call
from dify_lc.errors import InputError
from dify_lc.protocol import dify as proto
from dify_lc.protocol.events import NodeEvent, StreamEnd, TextDelta
from dify_lc.settings import HTTPSettings

__all__ = ["DifyWorkflow"]


class DifyWorkflow(HTTPSettings, RunnableSerializable[dict[str, Any], dict[str, Any]]):
    """Run a Dify workflow app as a ``Runnable[dict, dict]``.

    ``invoke(inputs)`` returns the workflow's ``outputs``. ``stream(inputs)`` yields dicts as
    the run progresses:

    - ``{"event": "text_chunk", "text": "..."}`` for streamed output text;
    - ``{"event": "<node/workflow event>", "data": {...}}`` for progress events (``node_started``,
      ``node_finished``, ``workflow_started``, …) when ``progress_events=True`` (default);
    - finally ``{"event": "workflow_finished", "outputs": {...}, "status": ..., "data": {...}}``.

    A run that ends ``status: failed`` (HTTP 200) raises
    :class:`~dify_lc.errors.WorkflowRunFailedError`; after streamed text, a
    :class:`~dify_lc.errors.StreamInterruptedError` caused by it. A run the server may have
    started is never retried blindly (a read timeout or a lost connection is not retried:
    workflows can have side effects); failures the server reports before any output (connect
    errors, 429, 5xx, an in-band error before the first text) are retried ``max_retries``
    times. An abandoned stream is stopped with ``POST /workflows/tasks/{task_id}/stop``.

    Per call, ``config["configurable"]`` may set ``user`` and ``files``.
    """

    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True)

    api_key: SecretStr | None = Field(default_factory=secret_from_env("DIFY_API_KEY", default=None))
    """Workflow app key; default from ``DIFY_API_KEY``."""
    base_url: str = Field(
        default_factory=from_env("DIFY_BASE_URL", default="https://api.dify.ai/v1")
    )
    user: str = "dify-lc"
    workflow_id: str | None = None
    """Run a specific published workflow version (Dify 1.x ``/workflows/{id}/run``)."""
    response_mode: Literal["streaming", "blocking"] = "streaming"
    """How ``invoke`` talks to Dify; streaming (default) is not cut off by proxies."""
    progress_events: bool = True
    backend: str = "dify-workflow"

    _api_key_env = "DIFY_API_KEY"
    _base_url_env = "DIFY_BASE_URL"

    def __init__(self, **data: Any) -> None:
        super().__init__(**data)
        self._setup_http(idempotent=False)

    def _prepare(self, inputs: Any, config: RunnableConfig | None, *, stream: bool) -> Call:
        if not isinstance(inputs, Mapping):
            raise InputError(f"DifyWorkflow input must be a dict of inputs, got {type(inputs)}")
        configurable = (config or {}).get("configurable") or {}
        user = configurable.get("user") or self.user
        mode: proto.ResponseMode = (
            "streaming" if stream or self.response_mode == "streaming" else "blocking"
        )
        request = proto.workflow_request(
            inputs,
            user=user,
            response_mode=mode,
            files=configurable.get("files"),
            workflow_id=self.workflow_id,
        )
        backend, secrets, progress = self.backend, self._endpoint.secrets, self.progress_events

        def new_state() -> proto.DifyStream:
            return proto.DifyStream(
                kind="workflow", backend=backend, progress=progress, secrets=secrets
            )

        def abandon(state: Any) -> proto.Request | None:
            if not state.task_id:
                return None
            return proto.stop_request("workflow", state.task_id, user=user)

        return Call(
            request,
            streaming=mode == "streaming",
            deadline=self._endpoint.timeouts.deadline(),
            new_state=new_state,
            abandon=abandon,
        )

    @staticmethod
    def _item(call: Call, out: Any) -> dict[str, Any]:
        kind = type(out)
        if kind is TextDelta:
            return {"event": "text_chunk", "text": out.text}
        if kind is StreamEnd:
            state = call.state
            assert isinstance(state, proto.DifyStream)
            assert state.workflow is not None
            return {
                "event": "workflow_finished",
                "outputs": state.workflow.outputs,
                "status": state.workflow.status,
                "workflow_run_id": state.workflow.workflow_run_id,
                "task_id": state.workflow.task_id,
                "data": out.metadata,
            }
        if kind is NodeEvent:
            return {"event": out.event, "data": out.data.get("data", out.data)}
        return {"event": type(out).__name__, "data": out}

    @staticmethod
    def _outputs(call: Call) -> dict[str, Any]:
        state = call.state
        assert isinstance(state, proto.DifyStream)
        assert state.workflow is not None
        return state.workflow.outputs

    # ------------------------------------------------------------------ invoke

    def _run(
        self,
        inputs: dict[str, Any],
        run_manager: CallbackManagerForChainRun,
        config: RunnableConfig,
    ) -> dict[str, Any]:
        call = self._prepare(inputs, config, stream=False)
        if not call.streaming:
            body = self._driver.blocking(call)
            return proto.parse_workflow_result(body, backend=self.backend).outputs
        for _ in self._driver.events(call):
            pass
        return self._outputs(call)

    async def _arun(
        self,
        inputs: dict[str, Any],
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
    ) -> dict[str, Any]:
        call = self._prepare(inputs, config, stream=False)
        if not call.streaming:
            body = await self._driver.ablocking(call)
            return proto.parse_workflow_result(body, backend=self.backend).outputs
        async for _ in self._driver.aevents(call):
            pass
        return self._outputs(call)

    def invoke(
        self, input: dict[str, Any], config: RunnableConfig | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """Run the workflow and return its outputs."""
        return self._call_with_config(self._run, input, config, run_type="chain")

    async def ainvoke(
        self, input: dict[str, Any], config: RunnableConfig | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """Async twin of :meth:`invoke`."""
        return await self._acall_with_config(self._arun, input, config, run_type="chain")

    # ------------------------------------------------------------------ stream

    def _stream_items(
        self,
        inputs: Iterator[dict[str, Any]],
        run_manager: CallbackManagerForChainRun,
        config: RunnableConfig,
    ) -> Iterator[dict[str, Any]]:
        for item in inputs:
            call = self._prepare(item, config, stream=True)
            for out in self._driver.events(call):
                yield self._item(call, out)

    async def _astream_items(
        self,
        inputs: AsyncIterator[dict[str, Any]],
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
    ) -> AsyncIterator[dict[str, Any]]:
        async for item in inputs:
            call = self._prepare(item, config, stream=True)
            async for out in self._driver.aevents(call):
                yield self._item(call, out)

    def stream(
        self, input: dict[str, Any], config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[dict[str, Any]]:
        """Yield text chunks and progress events as the run goes (see the class docstring)."""
        yield from self._transform_stream_with_config(
            iter([input]), self._stream_items, config, run_type="chain"
        )

    async def astream(
        self, input: dict[str, Any], config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[dict[str, Any]]:
        """Async twin of :meth:`stream`."""

        async def one() -> AsyncIterator[dict[str, Any]]:
            yield input

        async for item in self._atransform_stream_with_config(
            one(), self._astream_items, config, run_type="chain"
        ):
            yield item
