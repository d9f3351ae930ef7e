"""Dify service API, sans-I/O: request builders and parsers (PROTOCOL.md §2-§7).

Nothing here touches the network. Builders return :class:`Request` values; parsers take decoded
JSON or SSE ``(event, data)`` pairs and return typed events from :mod:`dify_lc.protocol.events`
or raise typed errors. Sync and async drivers share all of it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal
from urllib.parse import quote

from dify_lc.errors import ProtocolError, WorkflowRunFailedError
from dify_lc.protocol.error_mapping import inband_error
from dify_lc.protocol.events import (
    AnswerReplaced,
    NodeEvent,
    StreamEnd,
    TextDelta,
    Usage,
)
from dify_lc.protocol.stream import StreamState

__all__ = [
    "ChatAnswer",
    "DifyStream",
    "Request",
    "WorkflowResult",
    "chat_request",
    "completion_request",
    "delete_conversation_request",
    "feedback_request",
    "get_conversations_request",
    "get_messages_request",
    "get_parameters_request",
    "get_suggested_request",
    "parse_chat_answer",
    "parse_usage",
    "parse_workflow_result",
    "rename_conversation_request",
    "stop_request",
    "workflow_request",
]

ResponseMode = Literal["blocking", "streaming"]
AppKind = Literal["chat", "completion", "workflow"]

_STOP_PATHS: dict[str, str] = {
    "chat": "/chat-messages/{task_id}/stop",
    "completion": "/completion-messages/{task_id}/stop",
    "workflow": "/workflows/tasks/{task_id}/stop",
}
# Events that carry answer text, per app kind. Agent text comes in `agent_message`, workflow
# output in `text_chunk` (PROTOCOL.md §5).
_TEXT_EVENTS = frozenset({"message", "agent_message"})


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request to make: method, path relative to the base URL, query and JSON body."""

    method: str
    path: str
    params: dict[str, Any] | None = None
    json: dict[str, Any] | None = None


# --------------------------------------------------------------------------- request builders


def _generate_body(
    inputs: Mapping[str, Any] | None,
    user: str,
    response_mode: ResponseMode,
    files: Sequence[Mapping[str, Any]] | None,
) -> dict[str, Any]:
    # Send `inputs` (at least {}), `user` and an explicit response_mode on every call (§11.4).
    body: dict[str, Any] = {
        "inputs": dict(inputs) if inputs else {},
        "response_mode": response_mode,
        "user": user,
    }
    if files:
        body["files"] = [dict(f) for f in files]
    return body


def chat_request(
    query: str,
    *,
    user: str,
    inputs: Mapping[str, Any] | None = None,
    response_mode: ResponseMode = "streaming",
    conversation_id: str | None = None,
    files: Sequence[Mapping[str, Any]] | None = None,
    auto_generate_name: bool | None = None,
    workflow_id: str | None = None,
) -> Request:
    """``POST /chat-messages`` (chat, agent-chat and advanced-chat apps)."""
    body = _generate_body(inputs, user, response_mode, files)
    body["query"] = query
    if conversation_id:
        body["conversation_id"] = conversation_id
    if auto_generate_name is not None:
        body["auto_generate_name"] = auto_generate_name
    if workflow_id:
        body["workflow_id"] = workflow_id
    return Request("POST", "/chat-messages", json=body)


def completion_request(
    query: str,
    *,
    user: str,
    inputs: Mapping[str, Any] | None = None,
    response_mode: ResponseMode = "streaming",
    files: Sequence[Mapping[str, Any]] | None = None,
) -> Request:
    """``POST /completion-messages`` (completion apps)."""
    body = _generate_body(inputs, user, response_mode, files)
    body["query"] = query
    return Request("POST", "/completion-messages", json=body)


def workflow_request(
    inputs: Mapping[str, Any],
    *,
    user: str,
    response_mode: ResponseMode = "streaming",
    files: Sequence[Mapping[str, Any]] | None = None,
    workflow_id: str | None = None,
) -> Request:
    """``POST /workflows/run`` (or ``/workflows/{workflow_id}/run`` on 1.x)."""
    path = f"/workflows/{quote(workflow_id, safe='')}/run" if workflow_id else "/workflows/run"
    return Request("POST", path, json=_generate_body(inputs, user, response_mode, files))


def stop_request(kind: AppKind, task_id: str, *, user: str) -> Request:
    """Stop a streaming task. Dify always answers 200 ``{"result": "success"}`` (§6)."""
    path = _STOP_PATHS[kind].format(task_id=quote(task_id, safe=""))
    return Request("POST", path, json={"user": user})


def get_messages_request(
    conversation_id: str, *, user: str, first_id: str | None = None, limit: int = 20
) -> Request:
    """``GET /messages``: a conversation's history, oldest first."""
    if not 1 <= limit <= 100:
        raise ValueError("limit must be between 1 and 100")
    params: dict[str, Any] = {"conversation_id": conversation_id, "user": user, "limit": limit}
    if first_id:
        params["first_id"] = first_id
    return Request("GET", "/messages", params=params)


def get_conversations_request(
    *,
    user: str,
    last_id: str | None = None,
    limit: int = 20,
    sort_by: str | None = None,
) -> Request:
    """``GET /conversations`` of one end user."""
    if not 1 <= limit <= 100:
        raise ValueError("limit must be between 1 and 100")
    params: dict[str, Any] = {"user": user, "limit": limit}
    if last_id:
        params["last_id"] = last_id
    if sort_by:
        if sort_by.lstrip("-") not in ("created_at", "updated_at"):
            raise ValueError("sort_by must be one of ±created_at, ±updated_at")
        params["sort_by"] = sort_by
    return Request("GET", "/conversations", params=params)


def delete_conversation_request(conversation_id: str, *, user: str) -> Request:
    """``DELETE /conversations/{id}``; the body carries ``user`` (§1)."""
    return Request(
        "DELETE", f"/conversations/{quote(conversation_id, safe='')}", json={"user": user}
    )


def rename_conversation_request(
    conversation_id: str, *, user: str, name: str | None = None, auto_generate: bool = False
) -> Request:
    """``POST /conversations/{id}/name``."""
    body: dict[str, Any] = {"user": user, "auto_generate": auto_generate}
    if name is not None:
        body["name"] = name
    return Request("POST", f"/conversations/{quote(conversation_id, safe='')}/name", json=body)


def feedback_request(
    message_id: str,
    *,
    user: str,
    rating: Literal["like", "dislike"] | None,
    content: str | None = None,
) -> Request:
    """``POST /messages/{id}/feedbacks``; ``rating=None`` withdraws a rating."""
    body: dict[str, Any] = {"rating": rating, "user": user}
    if content is not None:
        body["content"] = content
    return Request("POST", f"/messages/{quote(message_id, safe='')}/feedbacks", json=body)


def get_suggested_request(message_id: str, *, user: str) -> Request:
    """``GET /messages/{id}/suggested``: follow-up questions (400 when the app disables them)."""
    return Request(
        "GET", f"/messages/{quote(message_id, safe='')}/suggested", params={"user": user}
    )


def get_parameters_request() -> Request:
    """``GET /parameters``: the app's input form, opening statement and features."""
    return Request("GET", "/parameters")


# --------------------------------------------------------------------------- parsers


def _decimal(value: Any) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None


def parse_usage(raw: Mapping[str, Any] | None) -> Usage | None:
    """Dify ``metadata.usage``: ints for tokens, decimal strings for prices (e.g. ``"0E-7"``)."""
    if not raw:
        return None
    prompt = int(raw.get("prompt_tokens") or 0)
    completion = int(raw.get("completion_tokens") or 0)
    latency = raw.get("latency")
    return Usage(
        input_tokens=prompt,
        output_tokens=completion,
        total_tokens=int(raw.get("total_tokens") or prompt + completion),
        total_price=_decimal(raw.get("total_price")),
        currency=raw.get("currency"),
        latency=float(latency) if isinstance(latency, int | float) else None,
        raw=dict(raw),
    )


@dataclass(slots=True)
class ChatAnswer:
    """A complete chat / completion answer (blocking body, or an aggregated stream)."""

    answer: str
    conversation_id: str | None
    message_id: str | None
    task_id: str | None
    mode: str | None
    usage: Usage | None
    metadata: dict[str, Any]
    created_at: int | None


def parse_chat_answer(data: Any, *, backend: str = "dify") -> ChatAnswer:
    """Parse a blocking ``/chat-messages`` or ``/completion-messages`` body."""
    if not isinstance(data, dict) or "answer" not in data:
        raise ProtocolError("unexpected blocking answer body", backend=backend)
    metadata = data.get("metadata") or {}
    return ChatAnswer(
        answer=str(data.get("answer") or ""),
        conversation_id=data.get("conversation_id") or None,
        message_id=data.get("message_id") or data.get("id"),
        task_id=data.get("task_id"),
        mode=data.get("mode"),
        usage=parse_usage(metadata.get("usage")),
        metadata=metadata,
        created_at=data.get("created_at"),
    )


@dataclass(slots=True)
class WorkflowResult:
    """A finished workflow run."""

    outputs: dict[str, Any]
    status: str
    workflow_run_id: str | None
    task_id: str | None
    error: str | None
    elapsed_time: float | None
    total_tokens: int | None
    total_steps: int | None
    raw: dict[str, Any]


def _workflow_result(
    run: Mapping[str, Any], *, task_id: str | None, run_id: str | None, backend: str
) -> WorkflowResult:
    outputs = run.get("outputs")
    if isinstance(outputs, str):  # 0.15 run detail encodes outputs as a JSON string
        try:
            outputs = json.loads(outputs)
        except ValueError:
            outputs = {"text": outputs}
    result = WorkflowResult(
        outputs=outputs if isinstance(outputs, dict) else {},
        status=str(run.get("status") or "unknown"),
        workflow_run_id=run_id or run.get("id"),
        task_id=task_id,
        error=run.get("error"),
        elapsed_time=run.get("elapsed_time"),
        total_tokens=run.get("total_tokens"),
        total_steps=run.get("total_steps"),
        raw=dict(run),
    )
    if result.status == "failed":
        # A failed run is still HTTP 200 (§4.2): surface it as an error.
        raise WorkflowRunFailedError(
            f"workflow run failed: {result.error or 'unknown error'}",
            outputs=result.outputs,
            code="workflow_failed",
            backend=backend,
        )
    return result


def parse_workflow_result(data: Any, *, backend: str = "dify") -> WorkflowResult:
    """Parse a blocking ``/workflows/run`` body; raise on ``status: failed``."""
    if not isinstance(data, dict) or not isinstance(data.get("data"), dict):
        raise ProtocolError("unexpected workflow body", backend=backend)
    return _workflow_result(
        data["data"],
        task_id=data.get("task_id"),
        run_id=data.get("workflow_run_id"),
        backend=backend,
    )


class DifyStream(StreamState):
    """State machine for one Dify SSE stream: feed ``(event, data)`` pairs, get typed events.

    - bare ``event: ping`` frames (no data) and unknown event names are skipped;
    - ``message`` / ``agent_message`` / ``text_chunk`` → :class:`TextDelta` (empty text skipped);
    - ``message_replace`` → :class:`AnswerReplaced`;
    - ``message_end`` → :class:`StreamEnd`; ``workflow_finished`` → :class:`StreamEnd` for workflow
      apps (raises :class:`WorkflowRunFailedError` when it failed);
    - workflow / node / agent events → :class:`NodeEvent` (only with ``progress=True``);
    - ``error`` → raises :class:`InBandStreamError` (or :class:`StreamInterruptedError` after text).

    Dify sends no ``done`` event: :meth:`finish` is called at end of body and raises when the
    stream was cut off before its terminal event. ``task_id`` is known from the first event on,
    so an early exit can stop the task.
    """

    __slots__ = (
        "conversation_id",
        "kind",
        "message_id",
        "progress",
        "task_id",
        "workflow",
        "workflow_run_id",
    )

    def __init__(
        self,
        *,
        kind: AppKind = "chat",
        backend: str = "dify",
        progress: bool = False,
        secrets: Iterable[str] = (),
    ) -> None:
        super().__init__(backend=backend, secrets=secrets)
        self.kind = kind
        self.progress = progress
        self.workflow: WorkflowResult | None = None
        self.task_id: str | None = None
        self.conversation_id: str | None = None
        self.message_id: str | None = None
        self.workflow_run_id: str | None = None

    def feed(
        self, event: str, data: str
    ) -> TextDelta | AnswerReplaced | StreamEnd | NodeEvent | None:
        """Consume one SSE event; return what it means for the caller, or ``None``."""
        if not data:
            return None  # `event: ping` has no data line (§5); never json.loads("")
        try:
            payload = json.loads(data)
        except ValueError as exc:
            raise self.fail(
                ProtocolError(f"invalid JSON in SSE data: {data[:200]!r}", backend=self.backend)
            ) from exc
        if not isinstance(payload, dict):
            raise self.fail(ProtocolError("SSE data is not an object", backend=self.backend))
        name = payload.get("event") or event
        if self.task_id is None and name != "error":
            self.task_id = payload.get("task_id")
            self.conversation_id = payload.get("conversation_id") or None
            self.message_id = payload.get("message_id") or payload.get("id")
            self.workflow_run_id = payload.get("workflow_run_id")
        if name in _TEXT_EVENTS:
            text = payload.get("answer")
            if not text:
                return None  # the final `answer: ""` of a normal end
            self._parts.append(text)
            return TextDelta(text)
        if name == "text_chunk":
            text = (payload.get("data") or {}).get("text")
            if not text:
                return None
            self._parts.append(text)
            return TextDelta(text)
        if name == "message_end":
            self.ended = True
            metadata = payload.get("metadata") or {}
            self.message_id = payload.get("message_id") or payload.get("id") or self.message_id
            return StreamEnd(parse_usage(metadata.get("usage")), "stop", metadata)
        if name == "error":
            raise self.fail(inband_error(payload, backend=self.backend, secrets=self.secrets))
        if name == "message_replace" or name == "text_replace":
            text = payload.get("answer")
            if text is None:
                text = (payload.get("data") or {}).get("text") or ""
            self._parts = [text] if text else []
            return AnswerReplaced(text, payload.get("reason"))
        if name == "workflow_finished":
            run = payload.get("data") or {}
            self.workflow_run_id = payload.get("workflow_run_id") or self.workflow_run_id
            if self.kind == "workflow":
                self.ended = True
                try:
                    self.workflow = _workflow_result(
                        run, task_id=self.task_id, run_id=self.workflow_run_id, backend=self.backend
                    )
                except WorkflowRunFailedError as exc:
                    raise self.fail(exc) from None
                return StreamEnd(None, self.workflow.status, dict(run))
            # advanced-chat: a failed run is followed by an `error` event; keep reading.
        if self.progress and name not in ("ping", "tts_message", "tts_message_end"):
            return NodeEvent(name, payload)
        return None

    def finish(self) -> None:
        """Call at end of body: raise when the terminal event never came (the body was cut off)."""
        if not self.ended:
            expected = "workflow_finished" if self.kind == "workflow" else "message_end"
            raise self.fail(
                ProtocolError(
                    f"stream ended without {expected}: the response was cut off",
                    backend=self.backend,
                )
            )
