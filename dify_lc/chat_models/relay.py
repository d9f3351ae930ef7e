"""ChatRelay: a LangChain chat model over an OpenAI-compatible relay (LiteLLM, one-api, …)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from operator import itemgetter
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    ToolMessage,
    convert_to_openai_messages,
)
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.output_parsers.openai_tools import (
    JsonOutputKeyToolsParser,
    PydanticToolsParser,
    make_invalid_tool_call,
    parse_tool_call,
)
from langchain_core.outputs import ChatGenerationChunk
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.tools import BaseTool
from langchain_core.utils import from_env, secret_from_env
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import AliasChoices, BaseModel, Field, SecretStr

from dify_lc.chat_models._base import HTTPChatModel, last_message_text
from dify_lc.driver import Call
from dify_lc.errors import InputError
from dify_lc.protocol import relay as proto
from dify_lc.protocol.events import TextDelta, ToolCallDelta, Usage

__all__ = ["ChatRelay"]

# Call kwargs that go into the request body as they are.
_BODY_KEYS = frozenset(
    {
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "presence_penalty",
        "frequency_penalty",
        "seed",
        "user",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "logit_bias",
        "n",
    }
)


class ChatRelay(HTTPChatModel):
    """Chat model over an OpenAI-compatible ``/chat/completions`` relay.

    Example:
        .. code-block:: python

            from dify_lc import ChatRelay

            model = ChatRelay(model="gpt-4o")  # RELAY_BASE_URL / RELAY_API_KEY from env
            model.invoke("Hello").content

    Streams request ``stream_options.include_usage`` (``stream_usage=True``) so
    ``usage_metadata`` is filled once, on the last chunk. Tool calling (``bind_tools``) and
    ``with_structured_output`` (``function_calling``, ``json_schema``, ``json_mode``) use the
    OpenAI format. Relays are stateless, so a request that may have reached the server (read
    timeout, connection lost) is retried like any retryable failure (``max_retries``), before
    the first token only.
    """

    model: str = Field(validation_alias=AliasChoices("model", "model_name"))
    """Model name as the relay knows it (e.g. ``gpt-4o``)."""
    api_key: SecretStr | None = Field(
        default_factory=secret_from_env("RELAY_API_KEY", default=None)
    )
    """Relay key; default from ``RELAY_API_KEY``."""
    base_url: str = Field(default_factory=from_env("RELAY_BASE_URL", default=""))
    """Relay base URL ending in ``/v1``; default from ``RELAY_BASE_URL``."""
    temperature: float | None = None
    max_tokens: int | None = Field(
        default=None, validation_alias=AliasChoices("max_tokens", "max_completion_tokens")
    )
    stop: list[str] | str | None = Field(
        default=None, validation_alias=AliasChoices("stop", "stop_sequences")
    )
    top_p: float | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Extra fields merged into every request body."""
    stream_usage: bool = True
    """Ask for usage in streams (``stream_options.include_usage``)."""
    retry_on_read_timeout: bool = True
    backend: str = "relay"

    _api_key_env = "RELAY_API_KEY"
    _base_url_env = "RELAY_BASE_URL"

    @property
    def _llm_type(self) -> str:
        return "openai-compatible-relay"

    def _is_idempotent(self) -> bool:
        return self.retry_on_read_timeout

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {**super()._identifying_params, "model": self.model}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "openai"
        params["ls_model_name"] = kwargs.get("model") or self.model
        if self.max_tokens is not None and "ls_max_tokens" not in params:
            params["ls_max_tokens"] = self.max_tokens
        default_stop = [self.stop] if isinstance(self.stop, str) else self.stop
        if not stop and default_stop:
            params["ls_stop"] = default_stop
        return params

    # ------------------------------------------------------------------ request

    def _body_params(self, stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        params: dict[str, Any] = {
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "stop": stop or self.stop or None,
            "top_p": self.top_p,
            "seed": self.seed,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
        }
        if self.model_kwargs:
            params.update(self.model_kwargs)
        for key, value in kwargs.items():
            if key in _BODY_KEYS:
                params[key] = value
        if params.get("n") not in (None, 1):
            raise InputError("n > 1 is not supported: ask for one completion per call")
        return params

    def _prepare(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        kwargs: dict[str, Any],
        *,
        stream: bool,
    ) -> Call:
        """Validate input and build the request: no network I/O, errors are InputError."""
        if not messages:
            raise InputError("no messages: ChatRelay needs at least one message")
        last = messages[-1]
        if isinstance(last, HumanMessage):
            if not last_message_text(last).strip() and not _has_non_text(last):
                raise InputError("the last human message is empty")
        elif not isinstance(last, ToolMessage):
            raise InputError(
                f"the last message must be a human message or a tool result, got {last.type}"
            )
        deadline, retry = self._call_limits(kwargs)
        model = kwargs.get("model") or self.model
        request = proto.chat_completions_request(
            convert_to_openai_messages(messages),
            model=model,
            stream=stream,
            include_usage=self.stream_usage,
            params=self._body_params(stop, kwargs),
        )
        backend, secrets = self.backend, self._endpoint.secrets

        def new_state() -> proto.RelayStream:
            return proto.RelayStream(backend=backend, secrets=secrets)

        return Call(
            request,
            streaming=stream,
            deadline=deadline,
            retry=retry,
            new_state=new_state,
            data={"model": model},
        )

    # ------------------------------------------------------------------ results

    def _metadata(
        self,
        call: Call,
        *,
        model: str | None,
        finish_reason: str | None,
        usage: Usage | None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "model_name": model or call.data["model"],
            "model_provider": "openai",
            "backend": self.backend,
            "finish_reason": finish_reason,
            "latency_ms": call.elapsed_ms(),
        }
        if usage is not None:
            metadata["token_usage"] = usage.raw
        if extra:
            metadata.update(extra)
        return metadata

    def _result_from_body(self, call: Call, data: Any) -> AIMessage:
        answer = proto.parse_chat_completion(data, backend=self.backend)
        tool_calls, invalid = [], []
        for raw in answer.tool_calls:
            try:
                parsed = parse_tool_call(raw, return_id=True)
            except Exception as exc:  # the relay returned arguments that are not JSON
                invalid.append(make_invalid_tool_call(raw, str(exc)))
            else:
                if parsed:
                    tool_calls.append(parsed)
        extra: dict[str, Any] = {"id": answer.id}
        if answer.system_fingerprint:
            extra["system_fingerprint"] = answer.system_fingerprint
        additional: dict[str, Any] = {}
        if answer.refusal:
            additional["refusal"] = answer.refusal
        return AIMessage(
            content=answer.content,
            tool_calls=tool_calls,
            invalid_tool_calls=invalid,
            additional_kwargs=additional,
            response_metadata=self._metadata(
                call,
                model=answer.model,
                finish_reason=answer.finish_reason,
                usage=answer.usage,
                extra=extra,
            ),
            usage_metadata=answer.usage.to_metadata() if answer.usage else None,
            id=answer.id,
        )

    def _end_chunk(self, call: Call) -> ChatGenerationChunk:
        state = call.state
        assert isinstance(state, proto.RelayStream)
        end = state.end()
        return ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                response_metadata=self._metadata(
                    call,
                    model=state.model,
                    finish_reason=end.finish_reason,
                    usage=end.usage,
                    extra=end.metadata,
                ),
                usage_metadata=end.usage.to_metadata() if end.usage else None,
                chunk_position="last",
            )
        )

    @staticmethod
    def _chunk(outs: list[TextDelta | ToolCallDelta]) -> ChatGenerationChunk:
        if len(outs) == 1 and type(outs[0]) is TextDelta:  # the common case, kept cheap
            return ChatGenerationChunk(message=AIMessageChunk(content=outs[0].text))
        text = "".join(o.text for o in outs if type(o) is TextDelta)
        calls = [
            tool_call_chunk(name=o.name, args=o.arguments, id=o.id, index=o.index)
            for o in outs
            if type(o) is ToolCallDelta
        ]
        return ChatGenerationChunk(message=AIMessageChunk(content=text, tool_call_chunks=calls))

    # ------------------------------------------------------------------ LangChain hooks

    def _answer(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> AIMessage:
        call = self._prepare(messages, stop, kwargs, stream=False)
        return self._result_from_body(call, self._driver.blocking(call))

    async def _aanswer(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> AIMessage:
        call = self._prepare(messages, stop, kwargs, stream=False)
        return self._result_from_body(call, await self._driver.ablocking(call))

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        call = self._prepare(messages, stop, kwargs, stream=True)
        chunk = self._chunk
        for outs in self._driver.events(call):
            yield chunk(outs)
        yield self._end_chunk(call)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        call = self._prepare(messages, stop, kwargs, stream=True)
        chunk = self._chunk
        async for outs in self._driver.aevents(call):
            yield chunk(outs)
        yield self._end_chunk(call)

    # ------------------------------------------------------------------ tools

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: dict[str, Any] | str | bool | None = None,
        strict: bool | None = None,
        parallel_tool_calls: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools in the OpenAI format.

        ``tool_choice``: ``"auto"``, ``"none"``, ``"required"`` / ``"any"``, a tool name, ``True``
        (the only tool), or an OpenAI tool-choice dict.
        """
        formatted = [convert_to_openai_tool(tool, strict=strict) for tool in tools]
        names = [t["function"]["name"] for t in formatted if "function" in t]
        if tool_choice is not None and tool_choice is not False:
            if tool_choice is True:
                if len(names) != 1:
                    raise InputError("tool_choice=True needs exactly one tool")
                tool_choice = names[0]
            if tool_choice == "any":
                tool_choice = "required"
            if isinstance(tool_choice, str) and tool_choice not in ("auto", "none", "required"):
                tool_choice = {"type": "function", "function": {"name": tool_choice}}
            kwargs["tool_choice"] = tool_choice
        if parallel_tool_calls is not None:
            kwargs["parallel_tool_calls"] = parallel_tool_calls
        return super().bind(tools=formatted, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type | None = None,
        *,
        method: Literal["function_calling", "json_schema", "json_mode"] = "function_calling",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        """Structured output through tool calling, a JSON schema, or JSON mode."""
        if kwargs:
            raise InputError(f"unsupported arguments: {sorted(kwargs)}")
        is_pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
        llm: Runnable[LanguageModelInput, Any]
        parser: Runnable[Any, Any]
        if method == "json_mode":
            llm = self.bind(response_format={"type": "json_object"})
            parser = (
                PydanticOutputParser(pydantic_object=schema)  # type: ignore[arg-type]
                if is_pydantic
                else JsonOutputParser()
            )
        else:
            if schema is None:
                raise InputError(f"method={method!r} needs a schema")
            tool = convert_to_openai_tool(schema, strict=strict)
            name = tool["function"]["name"]
            if method == "function_calling":
                llm = self.bind_tools([schema], tool_choice=name, strict=strict)
                parser = (
                    PydanticToolsParser(tools=[schema], first_tool_only=True)  # type: ignore[list-item]
                    if is_pydantic
                    else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
                )
            elif method == "json_schema":
                json_schema: dict[str, Any] = {
                    "name": name,
                    "schema": tool["function"].get("parameters", {}),
                }
                if strict is not None:
                    json_schema["strict"] = strict
                llm = self.bind(response_format={"type": "json_schema", "json_schema": json_schema})
                parser = (
                    PydanticOutputParser(pydantic_object=schema)  # type: ignore[arg-type]
                    if is_pydantic
                    else JsonOutputParser()
                )
            else:
                raise InputError(f"unknown structured output method {method!r}")
        if not include_raw:
            return llm | parser
        parsed = RunnablePassthrough.assign(
            parsed=itemgetter("raw") | parser, parsing_error=lambda _: None
        )
        fallback = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=llm) | parsed.with_fallbacks(
            [fallback], exception_key="parsing_error"
        )


def _has_non_text(message: BaseMessage) -> bool:
    content = message.content
    return isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") not in (None, "text") for b in content
    )
