"""ChatDify: a LangChain chat model over a Dify app's service API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    get_buffer_string,
)
from langchain_core.outputs import ChatGenerationChunk
from langchain_core.utils import from_env, secret_from_env
from pydantic import AliasChoices, Field, SecretStr

from dify_lc.chat_models._base import HTTPChatModel, last_message_text
from dify_lc.driver import Call
from dify_lc.errors import InputError
from dify_lc.protocol import dify as proto
from dify_lc.protocol.events import AnswerReplaced, NodeEvent, StreamEnd, TextDelta, Usage

__all__ = ["ChatDify"]

# Per-call settings that may also come from ``config["configurable"]``.
_CALL_KEYS = ("conversation_id", "user", "inputs", "files", "response_mode")


class ChatDify(HTTPChatModel):
    """Chat model over a Dify app (chat, agent-chat, advanced-chat or completion).

    Example:
        .. code-block:: python

            from dify_lc import ChatDify

            model = ChatDify(user="customer-42")  # DIFY_API_KEY / DIFY_BASE_URL from env
            model.invoke("Where is my order?").content
            for chunk in model.stream("Tell me more"):
                print(chunk.content, end="")

    Conversations: Dify keeps history server-side under a ``conversation_id`` scoped to
    ``user``. Pass ``conversation_id=`` per call (kwarg or ``config["configurable"]``) to continue
    one: then only the last human message is sent as ``query``. Without one, the message
    history is folded into the query (``history="fold"``) or only the last human message is
    sent (``history="last"``). The id of the conversation used comes back in
    ``response_metadata["conversation_id"]``.

    Per call (keyword argument or ``config["configurable"]``): ``conversation_id``, ``user``,
    ``inputs`` (merged over the instance's), ``files`` and ``response_mode``.

    Model parameters (temperature, max_tokens, stop) are owned by the Dify app's own settings;
    they are accepted for LangChain compatibility and reported in traces, but not sent.

    Retries: ``max_retries`` retryable failures before the first token (connect errors, 429,
    Dify's "Too many requests", 5xx, in-band errors), with backoff. A request that may have
    reached Dify (read timeout, connection lost) is NOT retried unless
    ``retry_on_read_timeout=True``: it may have been billed and written into the conversation.

    Streaming: tokens are yielded as Dify sends them. A stream abandoned early (the consumer
    stops iterating, or the task is cancelled) is stopped server-side with
    ``POST /chat-messages/{task_id}/stop``. A failure after the first token raises
    :class:`~dify_lc.errors.StreamInterruptedError` with the partial text.
    """

    api_key: SecretStr | None = Field(default_factory=secret_from_env("DIFY_API_KEY", default=None))
    """Dify app key (``app-…``); default from ``DIFY_API_KEY``."""
    base_url: str = Field(
        default_factory=from_env("DIFY_BASE_URL", default="https://api.dify.ai/v1")
    )
    """Service API base URL; default ``DIFY_BASE_URL``, else ``https://api.dify.ai/v1``."""
    user: str = "dify-lc"
    """End-user id sent with every call (Dify scopes conversations to it)."""
    inputs: dict[str, Any] = Field(default_factory=dict)
    """App input-form variables sent with every call (merged with per-call ``inputs``)."""
    app_type: Literal["chat", "completion"] = "chat"
    """``chat`` (chat, agent-chat, advanced-chat apps) or ``completion``."""
    response_mode: Literal["streaming", "blocking"] = "streaming"
    """How ``invoke`` talks to Dify. ``streaming`` (default) aggregates the stream: it works for
    agent apps (streaming only) and is not cut off by proxies on long answers."""
    history: Literal["fold", "last"] = "fold"
    """Without a conversation id: fold prior messages into the query, or send the last only."""
    conversation_id: str | None = None
    """Default conversation to continue (usually given per call instead)."""
    retry_on_read_timeout: bool = False
    """Retry a request that may have reached Dify (opt-in: it may be billed twice)."""
    model: str = Field(default="dify", validation_alias=AliasChoices("model", "model_name"))
    """A label for the app's model, used in traces and metadata (Dify does not report it)."""
    temperature: float | None = None
    max_tokens: int | None = None
    stop: list[str] | None = Field(
        default=None, validation_alias=AliasChoices("stop", "stop_sequences")
    )
    backend: str = "dify"

    _api_key_env = "DIFY_API_KEY"
    _base_url_env = "DIFY_BASE_URL"
    _call_keys = _CALL_KEYS

    @property
    def _llm_type(self) -> str:
        return "dify"

    def _is_idempotent(self) -> bool:
        return self.retry_on_read_timeout

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "dify"
        params["ls_model_name"] = kwargs.get("model") or self.model
        if self.stop and "ls_stop" not in params:
            params["ls_stop"] = self.stop
        return params

    # ------------------------------------------------------------------ request

    def _prepare(
        self, messages: list[BaseMessage], kwargs: dict[str, Any], *, stream: bool
    ) -> Call:
        """Validate input and build the request: no network I/O, errors are InputError."""
        if not messages:
            raise InputError("no messages: ChatDify needs at least one human message")
        last = messages[-1]
        if not isinstance(last, HumanMessage):
            raise InputError(
                f"the last message must be a human message (Dify answers a query), got {last.type}"
            )
        text = last_message_text(last)
        if not text.strip():
            raise InputError("the last human message has no text")
        user = kwargs.get("user") or self.user
        if not isinstance(user, str) or not user:
            raise InputError("user must be a non-empty string")
        conversation_id = kwargs.get("conversation_id", self.conversation_id)
        inputs = self.inputs
        extra_inputs = kwargs.get("inputs")
        if extra_inputs:
            if not isinstance(extra_inputs, Mapping):
                raise InputError("inputs must be a mapping")
            inputs = {**inputs, **extra_inputs}
        files = kwargs.get("files")
        if files is not None and not isinstance(files, Sequence):
            raise InputError("files must be a list of Dify file objects")
        if conversation_id or self.history == "last" or len(messages) == 1:
            query = text
        else:
            query = get_buffer_string(messages)
        deadline, retry = self._call_limits(kwargs)
        response_mode = kwargs.get("response_mode") or self.response_mode
        if response_mode not in ("streaming", "blocking"):
            raise InputError("response_mode must be 'streaming' or 'blocking'")
        mode: proto.ResponseMode = (
            "streaming" if stream or response_mode == "streaming" else "blocking"
        )
        if self.app_type == "completion":
            request = proto.completion_request(
                query, user=user, inputs=inputs, response_mode=mode, files=files
            )
        else:
            request = proto.chat_request(
                query,
                user=user,
                inputs=inputs,
                response_mode=mode,
                conversation_id=conversation_id,
                files=files,
            )
        backend, secrets = self.backend, self._endpoint.secrets
        app_type = self.app_type

        def new_state() -> proto.DifyStream:
            return proto.DifyStream(kind=app_type, backend=backend, secrets=secrets)

        def abandon(state: Any) -> proto.Request | None:
            # Stop generation (and billing) of a stream nobody reads any more (§6).
            if not state.task_id:
                return None
            return proto.stop_request(app_type, state.task_id, user=user)

        return Call(
            request,
            streaming=mode == "streaming",
            deadline=deadline,
            retry=retry,
            new_state=new_state,
            abandon=abandon,
        )

    # ------------------------------------------------------------------ results

    def _metadata(
        self,
        call: Call,
        *,
        conversation_id: str | None,
        message_id: str | None,
        task_id: str | None,
        usage: Usage | None,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "model_name": self.model,
            "model_provider": "dify",
            "backend": self.backend,
            "conversation_id": conversation_id,
            "message_id": message_id,
            "task_id": task_id,
            "finish_reason": "stop",
            "latency_ms": call.elapsed_ms(),
        }
        if usage is not None:
            metadata["usage"] = {
                **usage.raw,
                "total_price": usage.total_price,
                "currency": usage.currency,
                "latency": usage.latency,
            }
        if extra:
            metadata.update(extra)
        return metadata

    def _result_from_body(self, call: Call, data: Any) -> AIMessage:
        answer = proto.parse_chat_answer(data, backend=self.backend)
        metadata = self._metadata(
            call,
            conversation_id=answer.conversation_id,
            message_id=answer.message_id,
            task_id=answer.task_id,
            usage=answer.usage,
            extra={"mode": answer.mode} if answer.mode else None,
        )
        return AIMessage(
            content=answer.answer,
            response_metadata=metadata,
            usage_metadata=answer.usage.to_metadata() if answer.usage else None,
            id=answer.message_id,
        )

    def _end_metadata(self, call: Call, end: StreamEnd | None) -> dict[str, Any]:
        state = call.state
        assert isinstance(state, proto.DifyStream)
        return self._metadata(
            call,
            conversation_id=state.conversation_id,
            message_id=state.message_id,
            task_id=state.task_id,
            usage=end.usage if end else None,
        )

    def _result_from_stream(self, call: Call, end: StreamEnd | None) -> AIMessage:
        state = call.state
        assert isinstance(state, proto.DifyStream)
        return AIMessage(
            content=state.text,
            response_metadata=self._end_metadata(call, end),
            usage_metadata=end.usage.to_metadata() if end and end.usage else None,
            id=state.message_id,
        )

    # ------------------------------------------------------------------ LangChain hooks

    def _answer(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> AIMessage:
        call = self._prepare(messages, kwargs, stream=False)
        if not call.streaming:
            return self._result_from_body(call, self._driver.blocking(call))
        end = None
        for out in self._driver.events(call):
            if type(out) is StreamEnd:
                end = out
        return self._result_from_stream(call, end)

    async def _aanswer(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> AIMessage:
        call = self._prepare(messages, kwargs, stream=False)
        if not call.streaming:
            return self._result_from_body(call, await self._driver.ablocking(call))
        end = None
        async for out in self._driver.aevents(call):
            if type(out) is StreamEnd:
                end = out
        return self._result_from_stream(call, end)

    def _chunk(self, call: Call, out: Any) -> ChatGenerationChunk | None:
        kind = type(out)
        if kind is TextDelta:
            return ChatGenerationChunk(message=AIMessageChunk(content=out.text))
        if kind is StreamEnd:
            return ChatGenerationChunk(
                message=AIMessageChunk(
                    content="",
                    response_metadata=self._end_metadata(call, out),
                    usage_metadata=out.usage.to_metadata() if out.usage else None,
                    chunk_position="last",
                )
            )
        if kind is AnswerReplaced:
            # Output moderation replaced the answer; text already streamed cannot be taken
            # back, so the replacement is reported in metadata (invoke returns it as content).
            return ChatGenerationChunk(
                message=AIMessageChunk(
                    content="",
                    response_metadata={
                        "message_replace": {"answer": out.text, "reason": out.reason}
                    },
                )
            )
        if kind is NodeEvent:  # pragma: no cover - progress is off for chat models
            return None
        return None

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        call = self._prepare(messages, kwargs, stream=True)
        chunk = self._chunk
        for out in self._driver.events(call):
            piece = chunk(call, out)
            if piece is not None:
                yield piece

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        call = self._prepare(messages, kwargs, stream=True)
        chunk = self._chunk
        async for out in self._driver.aevents(call):
            piece = chunk(call, out)
            if piece is not None:
                yield piece
