"""OpenAI-compatible relays (LiteLLM, one-api, new-api, OpenAI), sans-I/O (PROTOCOL.md §10).

``POST /chat/completions``, blocking and SSE. Streams end with ``data: [DONE]``; usage may come in
a chunk of its own whose ``choices`` is ``[]`` (OpenAI) or ``[{"index":0,"delta":{}}]`` (LiteLLM),
and that chunk must not clear ``finish_reason``. A ``data:`` frame with an ``error`` key is an
error even under HTTP 200.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dify_lc.errors import ProtocolError
from dify_lc.protocol.dify import Request
from dify_lc.protocol.error_mapping import inband_error
from dify_lc.protocol.events import StreamEnd, TextDelta, ToolCallDelta, Usage
from dify_lc.protocol.stream import StreamState

__all__ = [
    "RelayAnswer",
    "RelayStream",
    "chat_completions_request",
    "parse_chat_completion",
    "parse_usage",
]


def chat_completions_request(
    messages: Sequence[Mapping[str, Any]],
    *,
    model: str,
    stream: bool,
    include_usage: bool = True,
    params: Mapping[str, Any] | None = None,
) -> Request:
    """``POST /chat/completions``; ``params`` are passed through (temperature, tools, …)."""
    body: dict[str, Any] = {"model": model, "messages": messages}
    if params:
        body.update((k, v) for k, v in params.items() if v is not None)
    if stream:
        body["stream"] = True
        if include_usage:
            body["stream_options"] = {"include_usage": True}
    return Request("POST", "/chat/completions", json=body)


def parse_usage(raw: Mapping[str, Any] | None) -> Usage | None:
    """OpenAI ``usage``; LiteLLM adds a float ``cost`` (USD)."""
    if not raw:
        return None
    prompt = int(raw.get("prompt_tokens") or 0)
    completion = int(raw.get("completion_tokens") or 0)
    return Usage(
        input_tokens=prompt,
        output_tokens=completion,
        total_tokens=int(raw.get("total_tokens") or prompt + completion),
        raw=dict(raw),
    )


@dataclass(slots=True)
class RelayAnswer:
    """A complete chat completion (first choice)."""

    content: str
    tool_calls: list[dict[str, Any]]
    finish_reason: str | None
    usage: Usage | None
    model: str | None
    id: str | None
    system_fingerprint: str | None
    refusal: str | None


def parse_chat_completion(data: Any, *, backend: str = "relay") -> RelayAnswer:
    """Parse a blocking chat completion body."""
    if not isinstance(data, dict):
        raise ProtocolError("unexpected chat completion body", backend=backend)
    choices = data.get("choices")
    if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
        raise ProtocolError("chat completion without choices", backend=backend)
    choice = choices[0]
    message = choice.get("message") or {}
    return RelayAnswer(
        content=message.get("content") or "",
        tool_calls=list(message.get("tool_calls") or ()),
        finish_reason=choice.get("finish_reason"),
        usage=parse_usage(data.get("usage")),
        model=data.get("model"),
        id=data.get("id"),
        system_fingerprint=data.get("system_fingerprint"),
        refusal=message.get("refusal"),
    )


class RelayStream(StreamState):
    """State machine for one relay SSE stream: feed ``data`` strings, get typed events.

    ``feed`` returns a list (a chunk may carry text, tool-call fragments and usage at once) or
    ``None``. After ``[DONE]`` :attr:`ended` is true; :meth:`finish` raises if the body ended
    without it.
    """

    __slots__ = ("finish_reason", "id", "model", "saw_tool_call", "system_fingerprint", "usage")

    def __init__(self, *, backend: str = "relay", secrets: Iterable[str] = ()) -> None:
        super().__init__(backend=backend, secrets=secrets)
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.model: str | None = None
        self.id: str | None = None
        self.system_fingerprint: str | None = None
        self.saw_tool_call = False

    @property
    def has_content(self) -> bool:
        return bool(self._parts) or self.saw_tool_call

    def feed(self, event: str, data: str) -> list[TextDelta | ToolCallDelta] | None:
        """Consume one SSE event (relays only send ``data`` frames)."""
        if not data:
            return None
        if data == "[DONE]":
            self.ended = True
            return None
        try:
            chunk = json.loads(data)
        except ValueError as exc:
            raise self.fail(
                ProtocolError(f"invalid JSON in SSE data: {data[:200]!r}", backend=self.backend)
            ) from exc
        if not isinstance(chunk, dict):
            raise self.fail(ProtocolError("SSE data is not an object", backend=self.backend))
        if "error" in chunk:
            raise self.fail(inband_error(chunk, backend=self.backend, secrets=self.secrets))
        if self.id is None:
            self.id = chunk.get("id")
            self.model = chunk.get("model")
        if chunk.get("system_fingerprint"):
            self.system_fingerprint = chunk["system_fingerprint"]
        usage = chunk.get("usage")
        if usage:
            self.usage = parse_usage(usage)
        choices = chunk.get("choices")
        if not choices:
            return None
        choice = choices[0]
        reason = choice.get("finish_reason")
        if reason:  # never let the usage chunk clear it
            self.finish_reason = reason
        delta = choice.get("delta")
        if not delta:
            return None
        out: list[TextDelta | ToolCallDelta] = []
        text = delta.get("content")
        if text:
            self._parts.append(text)
            out.append(TextDelta(text))
        tool_calls = delta.get("tool_calls")
        if tool_calls:
            self.saw_tool_call = True
            for i, call in enumerate(tool_calls):
                function = call.get("function") or {}
                out.append(
                    ToolCallDelta(
                        index=call.get("index", i),
                        id=call.get("id"),
                        name=function.get("name"),
                        arguments=function.get("arguments"),
                    )
                )
        return out or None

    def end(self) -> StreamEnd:
        """The closing event once ``[DONE]`` (or the end of body) has been seen."""
        metadata: dict[str, Any] = {}
        if self.id:
            metadata["id"] = self.id
        if self.system_fingerprint:
            metadata["system_fingerprint"] = self.system_fingerprint
        return StreamEnd(self.usage, self.finish_reason, metadata)

    def finish(self) -> None:
        """Call at end of body: a stream without ``[DONE]`` was cut off."""
        if not self.ended:
            raise self.fail(
                ProtocolError(
                    "stream ended without [DONE]: the response was cut off", backend=self.backend
                )
            )
