"""`FakeDify`: a fake Dify 0.15.3 service API with the real server's bytes.

Wire format (see PROTOCOL.md §1-8 and the recordings in shared/peers/dify): JSON in Python
`json.dumps` default style (`", "`/`": "` separators, ASCII escapes); blocking generate bodies
have no trailing newline, every other JSON body ends in `\\n`; SSE frames are
`data: <json>\\n\\n`, the keep-alive is exactly `event: ping\\n\\n`, and a stream ends when the
body does (no `[DONE]`). Headers: `Server: gunicorn`, `X-Version: 0.15.3`, `X-Env: PRODUCTION`,
`Access-Control-Allow-Origin: *`, never `Retry-After`.

Served under `/v1`:

- `POST /chat-messages` (app `mode` "chat", "agent-chat" or "advanced-chat"),
  `POST /completion-messages`, `POST /workflows/run`: blocking and streaming.
- `POST /chat-messages/{task_id}/stop`, `/completion-messages/{task_id}/stop`,
  `/workflows/tasks/{task_id}/stop`: always 200 `{"result": "success"}` (400 without `user`).
  A stop from the same user ends a running stream early, like the real server: the last
  delivered `message` is followed directly by `message_end` (advanced-chat and workflows first
  send `workflow_finished` with status "stopped").
- `GET /messages`, `GET /conversations`, `DELETE /conversations/{id}`,
  `POST /conversations/{id}/name`, `POST /messages/{id}/feedbacks`,
  `GET /messages/{id}/suggested` (400: disabled), `GET /parameters`, `/info`, `/meta`.

Validation follows the real server, in its order: auth (401), malformed JSON (400
`bad_request`), `user` (400), reqparse `inputs`/`query`/`response_mode` (400 with `params`),
agent-chat blocking (400), empty `query` (400), `conversation_id` unknown or another user's
(404), the app form (`inputs.name` at most 48 characters). An unknown route is werkzeug's HTML
404; a known route with another method is a JSON 405 with `Allow`.

Conversations and messages live in memory, scoped to `user`. Usage is deterministic:
`prompt_tokens = len(query) // 4 + 1`, `completion_tokens` = the number of answer chunks.

Deviation from a real Dify app, for convenience: the completion and workflow endpoints are
always served, whatever `mode` says (a real app answers `not_completion_app` /
`not_workflow_app`); `mode` selects the flavour of `/chat-messages` only.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal

from aiohttp import web

from ._faults import Fault
from ._server import FakeServer, _abort, merge_headers, parse_json
from ._stream import StopFlag, StreamPlan, Timing, drive, spoil_body

__all__ = ["DEFAULT_ANSWER", "DifyMode", "FakeDify"]

DifyMode = Literal["chat", "agent-chat", "advanced-chat"]
DEFAULT_ANSWER = "Hello! This is a mocked gpt-4o reply from the LiteLLM proxy."

_NIL_UUID = "00000000-0000-0000-0000-000000000000"
_FORM_VARIABLES = ("name",)  # the "Peer Chat" app's form: one optional text input
_NAME_MAX_LENGTH = 48
_DEFAULT_USER = "DEFAULT-USER"
_INTRODUCTION = "Hi! I am the peer test bot."

_BASE = {"Server": "gunicorn", "X-Version": "0.15.3", "X-Env": "PRODUCTION"}
_JSON_HEADERS = {**_BASE, "Content-Type": "application/json", "Access-Control-Allow-Origin": "*"}
_SSE_HEADERS = {
    **_BASE,
    "Content-Type": "text/event-stream; charset=utf-8",
    "Access-Control-Allow-Origin": "*",
}
_HTML_HEADERS = {**_BASE, "Content-Type": "text/html; charset=utf-8"}

_NOT_FOUND_HTML = (
    b"<!doctype html>\n<html lang=en>\n<title>404 Not Found</title>\n<h1>Not Found</h1>\n"
    b"<p>The requested URL was not found on the server. If you entered the URL manually please "
    b"check your spelling and try again.</p>\n"
)
_SUCCESS = b'{"result": "success"}\n'

_PARAMETERS = {
    "opening_statement": _INTRODUCTION,
    "suggested_questions": [],
    "suggested_questions_after_answer": {"enabled": False},
    "speech_to_text": {"enabled": False},
    "text_to_speech": {"enabled": False, "voice": "", "language": ""},
    "retriever_resource": {"enabled": False},
    "annotation_reply": {"enabled": False},
    "more_like_this": {"enabled": False},
    "user_input_form": [
        {
            "text-input": {
                "label": "Name",
                "variable": "name",
                "required": False,
                "max_length": _NAME_MAX_LENGTH,
                "default": "",
            }
        }
    ],
    "sensitive_word_avoidance": {"enabled": False, "type": "", "configs": []},
    "file_upload": {
        "image": {
            "enabled": False,
            "number_limits": 3,
            "detail": "high",
            "transfer_methods": ["remote_url", "local_file"],
        }
    },
    "system_parameters": {
        "image_file_size_limit": 10,
        "video_file_size_limit": 100,
        "audio_file_size_limit": 50,
        "file_size_limit": 15,
        "workflow_file_upload_limit": 10,
    },
}
_INFO = {"name": "Peer Chat", "description": "chat app backed by LiteLLM mock", "tags": []}
_META: dict[str, Any] = {"tool_icons": {}}

# What Dify says when its OpenAI-compatible provider (a LiteLLM proxy) answers 429.
_UPSTREAM_ERROR = (
    "[openai_api_compatible] Error: API request failed with status code 429: "
    '{"error":{"message":"litellm.RateLimitError: this is a mock rate limit error\\n\\n'
    "LiteLLM: model group 'gpt-4o' failed with the error above. No fallback was attempted.\","
    '"type":"throttling_error","param":null,"code":"429"}}'
)

# Default bodies for `Fault(status=...)` without a body: (code, message).
_STATUS_ERRORS = {
    400: (
        "bad_request",
        "The browser (or proxy) sent a request that this server could not understand.",
    ),
    401: ("unauthorized", "Access token is invalid"),
    403: ("forbidden", "The app's API service has been disabled."),
    404: ("not_found", "Conversation Not Exists."),
    413: ("file_too_large", "File size exceeded."),
    415: ("unsupported_file_type", "File type not allowed."),
    429: ("too_many_requests", "Too many requests."),
}


def _dumps(obj: Any) -> str:
    return json.dumps(obj)


# werkzeug's status lines are upper case: "401 UNAUTHORIZED".
_REASONS = {s.value: s.phrase.upper() for s in HTTPStatus}


def _respond(status: int, body: bytes, headers: Mapping[str, str] = _JSON_HEADERS) -> web.Response:
    return web.Response(
        body=body, status=status, reason=_REASONS.get(status, "UNKNOWN"), headers=headers
    )


def _error(status: int, code: str, message: str) -> web.Response:
    return _respond(
        status, (_dumps({"code": code, "message": message, "status": status}) + "\n").encode()
    )


def _param_error(message: str, param: str) -> web.Response:
    # flask-restful reqparse shape: `params`, no `status`.
    body = _dumps({"code": "invalid_param", "message": message, "params": param}) + "\n"
    return _respond(400, body.encode())


_MISSING_JSON = "Missing required parameter in the JSON body"
_UNAUTHORIZED_NO_HEADER = (
    _dumps(
        {
            "code": "unauthorized",
            "message": "Authorization header must be provided and start with 'Bearer'",
            "status": 401,
        }
    )
    + "\n"
).encode()
_BAD_JSON_MESSAGE = "The browser (or proxy) sent a request that this server could not understand."


def _usage(prompt_tokens: int, completion_tokens: int, latency: float) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "prompt_unit_price": "0",
        "prompt_price_unit": "0",
        "prompt_price": "0E-7",
        "completion_tokens": completion_tokens,
        "completion_unit_price": "0",
        "completion_price_unit": "0",
        "completion_price": "0E-7",
        "total_tokens": prompt_tokens + completion_tokens,
        "total_price": "0E-7",
        "currency": "USD",
        "latency": latency,
    }


@dataclass(slots=True)
class _Message:
    id: str
    conversation_id: str | None
    user: str
    query: str
    inputs: dict[str, Any]
    created_at: int
    answer: str = ""
    rating: str | None = None
    status: str = "normal"
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "conversation_id": self.conversation_id,
            "parent_message_id": _NIL_UUID,
            "inputs": self.inputs,
            "query": self.query,
            "answer": self.answer,
            "message_files": [],
            "feedback": None if self.rating is None else {"rating": self.rating},
            "retriever_resources": [],
            "created_at": self.created_at,
            "agent_thoughts": [],
            "status": self.status,
            "error": self.error,
        }


@dataclass(slots=True)
class _Conversation:
    id: str
    user: str
    inputs: dict[str, Any]
    created_at: int
    updated_at: int
    name: str = "New conversation"
    messages: list[_Message] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "inputs": self.inputs,
            "status": "normal",
            "introduction": _INTRODUCTION,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass(slots=True)
class _Run:
    """One generate call: ids, timing and what the events need."""

    kind: Literal["chat", "completion", "workflow"]
    mode: str
    task_id: str
    message_id: str
    conversation_id: str | None
    created_at: int
    started: float
    prompt_tokens: int
    inputs: dict[str, Any]
    user: str
    message: _Message | None
    workflow_run_id: str = ""
    workflow_id: str = ""
    node_ids: tuple[str, ...] = ()


Handler = Callable[[web.BaseRequest, bytes, Any, str], Awaitable[web.StreamResponse]]


class FakeDify(FakeServer):
    """A fake Dify app on `http://127.0.0.1:<port>/v1`; see the module docstring.

    Args:
        api_key: the one accepted app key (`Authorization: Bearer <key>`); None accepts any.
        answer: every reply's text, streamed in `chunk_size`-character pieces.
        mode: the app mode behind `/chat-messages`.
        chunk_delay / first_token_delay: default timing of successful streams (seconds).
        ping_interval: `event: ping` every this many seconds from the start of a stream, as
            Dify does every 10 s; None disables them.
        seed: seeds the uuid4 ids, so runs are reproducible.
        record: keep `requests` (turn off for long benchmarks).

    Attributes:
        requests: every request received (`RecordedRequest`), credentials removed.
        stops: `(path, task_id, user)` for every stop request, `user` None when missing.
    """

    _thread_name = "fake-dify"

    def __init__(
        self,
        *,
        api_key: str | None = "app-test",
        answer: str = DEFAULT_ANSWER,
        chunk_size: int = 3,
        mode: DifyMode = "chat",
        chunk_delay: float = 0.0,
        first_token_delay: float = 0.0,
        ping_interval: float | None = 10.0,
        seed: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        record: bool = True,
    ) -> None:
        super().__init__(
            host=host,
            port=port,
            seed=seed,
            record=record,
            chunk_delay=chunk_delay,
            first_token_delay=first_token_delay,
        )
        if mode not in ("chat", "agent-chat", "advanced-chat"):
            raise ValueError(f"unsupported mode {mode!r}")
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        self.api_key = api_key
        self.mode: DifyMode = mode
        self.ping_interval = ping_interval
        self.chunk_size = chunk_size
        self.stops: list[tuple[str, str, str | None]] = []
        self._expected_auth = None if api_key is None else f"Bearer {api_key}"
        self._conversations: dict[str, _Conversation] = {}
        self._messages: dict[str, _Message] = {}
        self._live: dict[str, StopFlag] = {}
        self._top_routes: dict[str, dict[str, Handler]] = {
            "chat-messages": {"POST": self._chat_messages},
            "completion-messages": {"POST": self._completion_messages},
            "messages": {"GET": self._list_messages},
            "conversations": {"GET": self._list_conversations},
            "parameters": {"GET": self._static(_PARAMETERS)},
            "info": {"GET": self._static(_INFO)},
            "meta": {"GET": self._static(_META)},
        }
        self.answer = answer

    # -- configuration ---------------------------------------------------------------------

    @property
    def answer(self) -> str:
        """The reply text; assigning it rebuilds the pre-escaped chunks."""
        return self._answer

    @answer.setter
    def answer(self, value: str) -> None:
        size = self.chunk_size
        chunks = [value[i : i + size] for i in range(0, len(value), size)]
        self._answer = value
        self._chunks = chunks
        # Escaped once here, so a stream frame is three string concatenations.
        self._chunk_json = [_dumps(c) for c in chunks]

    def reset(self) -> None:
        """Forget recorded requests, stops and queued faults (conversations are kept)."""
        super().reset()
        self.stops.clear()

    # -- routing ---------------------------------------------------------------------------

    def _route(self, parts: list[str]) -> tuple[dict[str, Handler], str] | None:
        n = len(parts)
        if not all(parts):
            return None
        head = parts[0]
        if n == 1:
            methods = self._top_routes.get(head)
            return None if methods is None else (methods, "")
        if n == 2:
            if head == "workflows" and parts[1] == "run":
                return {"POST": self._workflows_run}, ""
            if head == "conversations":
                return {"DELETE": self._delete_conversation}, parts[1]
            return None
        if n == 3:
            tail = parts[2]
            if tail == "stop" and head in ("chat-messages", "completion-messages"):
                return {"POST": self._stop}, parts[1]
            if head == "conversations" and tail == "name":
                return {"POST": self._rename_conversation}, parts[1]
            if head == "messages" and tail == "feedbacks":
                return {"POST": self._feedback}, parts[1]
            if head == "messages" and tail == "suggested":
                return {"GET": self._suggested}, parts[1]
            return None
        if n == 4 and head == "workflows" and parts[1] == "tasks" and parts[3] == "stop":
            return {"POST": self._stop}, parts[2]
        return None

    async def _handle(self, request: web.BaseRequest, body: bytes) -> web.StreamResponse:
        path = request.path
        parsed_ok, data = parse_json(body)
        self._record(request, body, data)
        route = self._route(path[4:].split("/")) if path.startswith("/v1/") else None
        if route is None:
            return _respond(404, _NOT_FOUND_HTML, _HTML_HEADERS)
        methods, arg = route
        # werkzeug answers HEAD with the GET view (aiohttp drops the body).
        method = "GET" if request.method == "HEAD" else request.method
        handler = methods.get(method)
        if handler is None:
            allowed = {"OPTIONS", *methods}
            if "GET" in allowed:
                allowed.add("HEAD")
            allow = ", ".join(sorted(allowed))
            if request.method == "OPTIONS":
                return _respond(200, b"", {**_JSON_HEADERS, "Allow": allow})
            body405 = _dumps(
                {
                    "code": "method_not_allowed",
                    "message": "The method is not allowed for the requested URL.",
                    "status": 405,
                }
            )
            headers = {**_BASE, "Content-Type": "application/json", "Allow": allow}
            return _respond(405, (body405 + "\n").encode(), headers)
        return await handler(request, body, data if parsed_ok else _INVALID, arg)

    def _auth_error(self, request: web.BaseRequest) -> web.Response | None:
        header = request.headers.get("Authorization")
        if header is not None and header == self._expected_auth:
            return None
        if header is None or " " not in header:
            return _respond(401, _UNAUTHORIZED_NO_HEADER)
        parts = header.split(None, 1)
        if len(parts) < 2:
            return _respond(401, _UNAUTHORIZED_NO_HEADER)
        if parts[0].lower() != "bearer":
            return _error(401, "unauthorized", "Authorization scheme must be 'Bearer'")
        if self.api_key is not None and parts[1] != self.api_key:
            return _error(401, "unauthorized", "Access token is invalid")
        return None

    def _json_user(self, data: Any) -> tuple[dict[str, Any], str] | web.Response:
        """The JSON object and its `user`, or the error the real server gives."""
        if data is _INVALID:
            return _error(400, "bad_request", _BAD_JSON_MESSAGE)
        obj = data if isinstance(data, dict) else {}
        user = obj.get("user")
        if not user:
            return _error(400, "invalid_param", "Arg user must be provided.")
        return obj, str(user)

    # -- faults ----------------------------------------------------------------------------

    def _fault_response(self, fault: Fault, data: Any) -> web.Response:
        status = fault.status or 500
        base = {"Server": "gunicorn"} if fault.kind == "html" else _JSON_HEADERS
        headers = merge_headers(base, fault.headers)
        body = fault.body
        if body is None:
            if status >= 500:
                body = b'{"message": "Internal Server Error", "code": "unknown"}\n'
            else:
                phrase = _REASONS.get(status, "ERROR").capitalize()
                code, message = _STATUS_ERRORS.get(status, ("unknown", phrase))
                body = (
                    _dumps({"code": code, "message": message, "status": status}) + "\n"
                ).encode()
        return _respond(status, body, headers)

    # -- generate endpoints ----------------------------------------------------------------

    async def _chat_messages(
        self, request: web.BaseRequest, body: bytes, data: Any, arg: str
    ) -> web.StreamResponse:
        return await self._generate(request, data, "chat")

    async def _completion_messages(
        self, request: web.BaseRequest, body: bytes, data: Any, arg: str
    ) -> web.StreamResponse:
        return await self._generate(request, data, "completion")

    async def _workflows_run(
        self, request: web.BaseRequest, body: bytes, data: Any, arg: str
    ) -> web.StreamResponse:
        return await self._generate(request, data, "workflow")

    async def _generate(
        self, request: web.BaseRequest, data: Any, kind: Literal["chat", "completion", "workflow"]
    ) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        started = loop.time()
        fault = self._next_fault()
        if (
            fault is not None
            and (early := await self._transport_fault(request, fault, data)) is not None
        ):
            return early
        if (err := self._auth_error(request)) is not None:
            return err
        got = self._json_user(data)
        if isinstance(got, web.Response):
            return got
        obj, user = got
        # reqparse, in argument order, stopping at the first error.
        if "inputs" not in obj:
            return _param_error(_MISSING_JSON, "inputs")
        if kind == "chat" and "query" not in obj:
            return _param_error(_MISSING_JSON, "query")
        response_mode = obj.get("response_mode")
        if response_mode is None:
            response_mode = "blocking"
        if response_mode not in ("blocking", "streaming"):
            return _param_error(f"{response_mode} is not a valid choice", "response_mode")
        streaming = response_mode == "streaming"
        mode = self.mode if kind == "chat" else kind
        if mode == "agent-chat" and not streaming:
            return _error(400, "invalid_param", "Agent Chat App does not support blocking mode")
        query = obj.get("query") or ""
        if not isinstance(query, str):
            query = str(query)
        if kind == "chat" and not query:
            return _error(400, "invalid_param", "query is required")
        conversation: _Conversation | None = None
        if kind == "chat" and (conversation_id := obj.get("conversation_id")):
            conversation = self._conversations.get(str(conversation_id))
            if conversation is None or conversation.user != user:
                return _error(404, "not_found", "Conversation Not Exists.")
        raw_inputs = obj.get("inputs")
        inputs = raw_inputs if isinstance(raw_inputs, dict) else {}
        name = inputs.get("name")
        if name is not None:
            if not isinstance(name, str):
                return _error(400, "invalid_param", "name in input form must be a string")
            if len(name) > _NAME_MAX_LENGTH:
                return _error(
                    400,
                    "invalid_param",
                    f"name in input form must be less than {_NAME_MAX_LENGTH} characters",
                )
        form_inputs = {var: inputs.get(var) for var in _FORM_VARIABLES}

        run = self._start_run(kind, mode, user, query, form_inputs, conversation, started)
        timing = Timing.resolve(fault, self.first_token_delay, self.chunk_delay, self.ping_interval)
        if streaming:
            return await self._stream(request, run, timing, fault)
        return await self._blocking(request, run, timing, fault)

    def _start_run(
        self,
        kind: Literal["chat", "completion", "workflow"],
        mode: str,
        user: str,
        query: str,
        inputs: dict[str, Any],
        conversation: _Conversation | None,
        started: float,
    ) -> _Run:
        now = int(time.time())
        task_id = self._new_uuid()
        message_id = self._new_uuid()
        conversation_id: str | None = None
        message: _Message | None = None
        if kind == "chat":
            if conversation is None:
                conversation = _Conversation(self._new_uuid(), user, inputs, now, now)
                self._conversations[conversation.id] = conversation
            conversation.updated_at = now
            conversation_id = conversation.id
        if kind != "workflow":
            message = _Message(message_id, conversation_id, user, query, inputs, now)
            self._messages[message_id] = message
            if conversation is not None:
                conversation.messages.append(message)
        run = _Run(
            kind=kind,
            mode=mode,
            task_id=task_id,
            message_id=message_id,
            conversation_id=conversation_id,
            created_at=now,
            started=started,
            prompt_tokens=len(query) // 4 + 1,
            inputs=inputs,
            user=user,
            message=message,
        )
        if mode in ("advanced-chat", "workflow"):
            run.workflow_run_id = self._new_uuid()
            run.workflow_id = self._new_uuid()
            run.node_ids = (self._new_uuid(), self._new_uuid(), self._new_uuid())
        return run

    def _latency(self, run: _Run) -> float:
        return asyncio.get_running_loop().time() - run.started

    def _finish_message(self, run: _Run, answer: str, error: str | None = None) -> None:
        if run.message is not None:
            run.message.answer = answer
            if error is not None:
                run.message.status = "error"
                run.message.error = error

    async def _blocking(
        self, request: web.BaseRequest, run: _Run, timing: Timing, fault: Fault | None
    ) -> web.StreamResponse:
        await self._sleep(timing.blocking_duration(len(self._chunks)))
        if fault is not None and fault.inband_error_after is not None:
            # A model error in blocking mode is a plain HTTP 400 (PROTOCOL §4.1).
            self._finish_message(run, "", _UPSTREAM_ERROR)
            return _error(400, "completion_request_error", _UPSTREAM_ERROR)
        failed = fault is not None and fault.workflow_failed and run.mode == "workflow"
        if fault is not None and fault.workflow_failed and run.mode == "advanced-chat":
            self._finish_message(run, "", "boom")
            return _error(400, "invalid_param", "Run failed: boom")
        answer = self._answer
        completion_tokens = len(self._chunks)
        if run.kind == "workflow":
            now = int(time.time())
            obj: dict[str, Any] = {
                "task_id": run.task_id,
                "workflow_run_id": run.workflow_run_id,
                "data": {
                    "id": run.workflow_run_id,
                    "workflow_id": run.workflow_id,
                    "status": "failed" if failed else "succeeded",
                    "outputs": {} if failed else {"text": answer},
                    "error": "boom" if failed else None,
                    "elapsed_time": self._latency(run),
                    "total_tokens": 0 if failed else run.prompt_tokens + completion_tokens,
                    "total_steps": 2 if failed else 3,
                    "created_at": run.created_at,
                    "finished_at": now,
                },
            }
        else:
            obj = {"event": "message", "task_id": run.task_id, "id": run.message_id}
            obj["message_id"] = run.message_id
            if run.kind == "chat":
                obj["conversation_id"] = run.conversation_id
            obj["mode"] = run.mode
            obj["answer"] = answer
            obj["metadata"] = {
                "usage": _usage(run.prompt_tokens, completion_tokens, self._latency(run))
            }
            obj["created_at"] = run.created_at
            self._finish_message(run, answer)
        body = _dumps(obj).encode()  # no trailing newline on generate responses
        body = spoil_body(body, fault)
        if fault is not None and fault.invalid_json:
            body = body[: len(body) // 2]
        if fault is not None and fault.reset_after:
            resp = web.StreamResponse(status=200, reason="OK", headers=_JSON_HEADERS)
            resp.content_length = len(body)
            await resp.prepare(request)
            await resp.write(body[: len(body) // 2])
            await _abort(request)
        return _respond(200, body)

    async def _stream(
        self, request: web.BaseRequest, run: _Run, timing: Timing, fault: Fault | None
    ) -> web.StreamResponse:
        plan = self._plan(run, fault)
        flag = StopFlag(run.user)
        self._live[run.task_id] = flag
        try:
            resp = web.StreamResponse(status=200, reason="OK", headers=_SSE_HEADERS)
            await resp.prepare(request)
            await drive(request, resp, plan, timing, fault, flag)
            return resp
        finally:
            del self._live[run.task_id]

    # -- stream plans ----------------------------------------------------------------------

    def _plan(self, run: _Run, fault: Fault | None) -> StreamPlan:
        if run.mode == "workflow":
            return self._workflow_plan(run, fault)
        cid, mid, tid, ts = run.conversation_id, run.message_id, run.task_id, run.created_at

        def envelope(event: str) -> dict[str, Any]:
            obj: dict[str, Any] = {"event": event}
            if run.kind == "chat":
                obj["conversation_id"] = cid
            obj["message_id"] = mid
            obj["created_at"] = ts
            return obj

        # A frame is pre + escaped chunk + post; json.dumps makes pre, so spacing is exact.
        event = "agent_message" if run.mode == "agent-chat" else "message"
        pre = "data: " + _dumps({**envelope(event), "task_id": tid, "id": mid})[:-1]
        pre += ', "answer": '
        if run.mode == "agent-chat":
            post = "}\n\n"
        else:
            selector = '["llm", "text"]' if run.mode == "advanced-chat" else "null"
            post = f', "from_variable_selector": {selector}}}\n\n'
        content = [pre + cj + post for cj in self._chunk_json]
        chunks = self._chunks
        workflow = run.mode == "advanced-chat"

        def message_end(n: int) -> str:
            obj = envelope("message_end")
            obj["task_id"] = tid
            obj["id"] = mid
            obj["metadata"] = {"usage": _usage(run.prompt_tokens, n, self._latency(run))}
            obj["files"] = [] if workflow else None
            return "data: " + _dumps(obj) + "\n\n"

        def finish(n: int, stopped: bool) -> Sequence[str]:
            answer = "".join(chunks[:n])
            self._finish_message(run, answer)
            frames: list[str] = []
            if workflow:
                if not stopped:
                    frames += self._node_end_frames(run, envelope, answer, n)
                frames.append(
                    self._workflow_finished(
                        run, envelope, "stopped" if stopped else "succeeded", answer, n
                    )
                )
            elif not stopped:
                # The provider's empty last delta: observed in chat (peers/dify/s02).
                frames.append(pre + '""' + post)
            frames.append(message_end(n))
            return frames

        def error() -> str:
            self._finish_message(run, "", _UPSTREAM_ERROR)
            obj = envelope("error")
            obj.update(code="completion_request_error", status=400, message=_UPSTREAM_ERROR)
            return "data: " + _dumps(obj) + "\n\n"

        invalid = pre + (self._chunk_json[0][:-1] if content else '"') + "\n\n"
        head: list[str] = []
        if run.mode == "agent-chat":
            thought = envelope("agent_thought")
            thought.update(
                task_id=tid,
                id=self._new_uuid(),
                position=1,
                thought="",
                observation="",
                tool="",
                tool_labels={},
                tool_input="",
                message_files=[],
            )
            head.append("data: " + _dumps(thought) + "\n\n")
        elif workflow:
            head += self._node_start_frames(run, envelope)
            if fault is not None and fault.workflow_failed:
                return StreamPlan([], self._failed_finish(run, envelope), error, invalid, head)
        return StreamPlan(content, finish, error, invalid, head)

    def _workflow_plan(self, run: _Run, fault: Fault | None) -> StreamPlan:
        rid, tid = run.workflow_run_id, run.task_id
        pre = (
            f'data: {{"event": "text_chunk", "workflow_run_id": "{rid}", "task_id": "{tid}", '
            '"data": {"text": '
        )
        post = ', "from_variable_selector": ["llm", "text"]}}\n\n'
        content = [pre + cj + post for cj in self._chunk_json]
        chunks = self._chunks

        def envelope(event: str) -> dict[str, Any]:
            return {"event": event, "workflow_run_id": rid}

        def finish(n: int, stopped: bool) -> Sequence[str]:
            answer = "".join(chunks[:n])
            frames = [] if stopped else self._node_end_frames(run, envelope, answer, n)
            status = "stopped" if stopped else "succeeded"
            frames.append(self._workflow_finished(run, envelope, status, answer, n))
            return frames

        def error() -> str:
            obj = envelope("error")
            obj.update(code="completion_request_error", status=400, message=_UPSTREAM_ERROR)
            return "data: " + _dumps(obj) + "\n\n"

        invalid = pre + (self._chunk_json[0][:-1] if content else '"') + "\n\n"
        head = self._node_start_frames(run, envelope)
        if fault is not None and fault.workflow_failed:
            return StreamPlan([], self._failed_finish(run, envelope), error, invalid, head)
        return StreamPlan(content, finish, error, invalid, head)

    # -- workflow events (advanced-chat and workflow) --------------------------------------

    def _node(self, run: _Run, index: int) -> dict[str, Any]:
        node_id, node_type, title = (
            ("start", "start", "Start"),
            ("llm", "llm", "LLM"),
            ("answer", "answer", "Answer")
            if run.mode == "advanced-chat"
            else ("end", "end", "End"),
        )[index]
        predecessor = (None, "start", "llm")[index]
        return {
            "id": run.node_ids[index],
            "node_id": node_id,
            "node_type": node_type,
            "title": title,
            "index": index + 1,
            "predecessor_node_id": predecessor,
            "inputs": None,
        }

    def _node_started(self, run: _Run, envelope: Callable[[str], dict[str, Any]], i: int) -> str:
        data = self._node(run, i)
        data.update(
            created_at=run.created_at,
            extras={},
            parallel_id=None,
            parallel_start_node_id=None,
            parent_parallel_id=None,
            parent_parallel_start_node_id=None,
            iteration_id=None,
            parallel_run_id=None,
        )
        obj = envelope("node_started")
        obj.update(task_id=run.task_id, workflow_run_id=run.workflow_run_id, data=data)
        return "data: " + _dumps(obj) + "\n\n"

    def _node_finished(
        self,
        run: _Run,
        envelope: Callable[[str], dict[str, Any]],
        i: int,
        outputs: dict[str, Any] | None,
        tokens: int | None = None,
        error: str | None = None,
    ) -> str:
        data = self._node(run, i)
        data.update(
            process_data=None,
            outputs=outputs,
            status="failed" if error else "succeeded",
            error=error,
            elapsed_time=self._latency(run),
            execution_metadata=None
            if tokens is None
            else {"total_tokens": tokens, "total_price": "0", "currency": "USD"},
            created_at=run.created_at,
            finished_at=int(time.time()),
            files=[],
            parallel_id=None,
            parallel_start_node_id=None,
            parent_parallel_id=None,
            parent_parallel_start_node_id=None,
            iteration_id=None,
        )
        obj = envelope("node_finished")
        obj.update(task_id=run.task_id, workflow_run_id=run.workflow_run_id, data=data)
        return "data: " + _dumps(obj) + "\n\n"

    def _node_start_frames(self, run: _Run, envelope: Callable[[str], dict[str, Any]]) -> list[str]:
        started = envelope("workflow_started")
        started.update(
            task_id=run.task_id,
            workflow_run_id=run.workflow_run_id,
            data={
                "id": run.workflow_run_id,
                "workflow_id": run.workflow_id,
                "sequence_number": 1,
                "inputs": run.inputs,
                "created_at": run.created_at,
            },
        )
        return [
            "data: " + _dumps(started) + "\n\n",
            self._node_started(run, envelope, 0),
            self._node_finished(run, envelope, 0, run.inputs),
            self._node_started(run, envelope, 1),
        ]

    def _node_end_frames(
        self, run: _Run, envelope: Callable[[str], dict[str, Any]], answer: str, n: int
    ) -> list[str]:
        key = "answer" if run.mode == "advanced-chat" else "output"
        return [
            self._node_finished(run, envelope, 1, {"text": answer}, run.prompt_tokens + n),
            self._node_started(run, envelope, 2),
            self._node_finished(run, envelope, 2, {key: answer}),
        ]

    def _workflow_finished(
        self,
        run: _Run,
        envelope: Callable[[str], dict[str, Any]],
        status: str,
        answer: str,
        n: int,
        error: str | None = None,
    ) -> str:
        if status == "failed":
            outputs: dict[str, Any] = {}
        elif run.mode == "advanced-chat":
            outputs = {"answer": answer}
        else:
            outputs = {"text": answer}
        obj = envelope("workflow_finished")
        obj.update(
            task_id=run.task_id,
            workflow_run_id=run.workflow_run_id,
            data={
                "id": run.workflow_run_id,
                "workflow_id": run.workflow_id,
                "sequence_number": 1,
                "status": status,
                "outputs": outputs,
                "error": error,
                "elapsed_time": self._latency(run),
                "total_tokens": run.prompt_tokens + n if n else 0,
                "total_steps": 3 if status == "succeeded" else 2,
                "created_by": {"id": self._end_user_id(run.user), "user": run.user},
                "created_at": run.created_at,
                "finished_at": int(time.time()),
                "exceptions_count": 0,
                "files": [],
            },
        )
        return "data: " + _dumps(obj) + "\n\n"

    def _failed_finish(
        self, run: _Run, envelope: Callable[[str], dict[str, Any]]
    ) -> Callable[[int, bool], Sequence[str]]:
        def finish(n: int, stopped: bool) -> Sequence[str]:
            frames = [
                self._node_finished(run, envelope, 1, None, error="boom"),
                self._workflow_finished(run, envelope, "failed", "", 0, error="boom"),
            ]
            if run.mode == "advanced-chat":
                # A chatflow adds the error event after the failed workflow_finished.
                self._finish_message(run, "", "Run failed: boom")
                obj = envelope("error")
                obj.update(code="invalid_param", status=400, message="Run failed: boom")
                frames.append("data: " + _dumps(obj) + "\n\n")
            return frames

        return finish

    def _end_user_id(self, user: str) -> str:
        # Stable per user without drawing from the seeded generator.
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"dify-end-user:{user}"))

    # -- other endpoints -------------------------------------------------------------------

    async def _stop(
        self, request: web.BaseRequest, body: bytes, data: Any, task_id: str
    ) -> web.StreamResponse:
        user = data.get("user") if isinstance(data, dict) else None
        self.stops.append((request.path, task_id, None if user is None else str(user)))
        if (err := self._auth_error(request)) is not None:
            return err
        got = self._json_user(data)
        if isinstance(got, web.Response):
            return got
        flag = self._live.get(task_id)
        # Another user's stop is accepted and silently ignored, like Dify's.
        if flag is not None and flag.user == got[1]:
            flag.stop()
        return _respond(200, _SUCCESS)

    def _static(self, obj: Any) -> Handler:
        body = (_dumps(obj) + "\n").encode()

        async def handler(
            request: web.BaseRequest, raw: bytes, data: Any, arg: str
        ) -> web.StreamResponse:
            err = self._auth_error(request)
            return _respond(200, body) if err is None else err

        return handler

    def _owned(self, conversation_id: str, user: str) -> _Conversation | None:
        conversation = self._conversations.get(conversation_id)
        return conversation if conversation is not None and conversation.user == user else None

    async def _list_messages(
        self, request: web.BaseRequest, body: bytes, data: Any, arg: str
    ) -> web.StreamResponse:
        if (err := self._auth_error(request)) is not None:
            return err
        query = request.query
        conversation_id = query.get("conversation_id")
        if not conversation_id:
            return _param_error("Missing required parameter in the query string", "conversation_id")
        user = query.get("user") or _DEFAULT_USER
        limit = _limit(query.get("limit"))
        if isinstance(limit, web.Response):
            return limit
        conversation = self._owned(conversation_id, user)
        if conversation is None:
            return _error(404, "not_found", "Conversation Not Exists.")
        history = conversation.messages
        if first_id := query.get("first_id"):
            ids = [m.id for m in history]
            if first_id not in ids:
                return _error(404, "not_found", "First Message Not Exists.")
            history = history[: ids.index(first_id)]
        page = history[-limit:]
        obj = {
            "limit": limit,
            "has_more": len(history) > limit,
            "data": [m.to_json() for m in page],
        }
        return _respond(200, (_dumps(obj) + "\n").encode())

    async def _list_conversations(
        self, request: web.BaseRequest, body: bytes, data: Any, arg: str
    ) -> web.StreamResponse:
        if (err := self._auth_error(request)) is not None:
            return err
        query = request.query
        user = query.get("user") or _DEFAULT_USER
        limit = _limit(query.get("limit"))
        if isinstance(limit, web.Response):
            return limit
        sort_by = query.get("sort_by") or "-updated_at"
        if sort_by not in ("created_at", "-created_at", "updated_at", "-updated_at"):
            return _param_error(f"{sort_by} is not a valid choice", "sort_by")
        key = sort_by.lstrip("-")
        mine = [c for c in self._conversations.values() if c.user == user]
        mine.sort(key=lambda c: getattr(c, key), reverse=sort_by.startswith("-"))
        if last_id := query.get("last_id"):
            ids = [c.id for c in mine]
            if last_id not in ids:
                return _error(404, "not_found", "Last Conversation Not Exists.")
            mine = mine[ids.index(last_id) + 1 :]
        obj = {
            "limit": limit,
            "has_more": len(mine) > limit,
            "data": [c.to_json() for c in mine[:limit]],
        }
        return _respond(200, (_dumps(obj) + "\n").encode())

    async def _delete_conversation(
        self, request: web.BaseRequest, body: bytes, data: Any, conversation_id: str
    ) -> web.StreamResponse:
        if (err := self._auth_error(request)) is not None:
            return err
        got = self._json_user(data)
        if isinstance(got, web.Response):
            return got
        if self._owned(conversation_id, got[1]) is None:
            return _error(404, "not_found", "Conversation Not Exists.")
        del self._conversations[conversation_id]
        return _respond(200, _SUCCESS)

    async def _rename_conversation(
        self, request: web.BaseRequest, body: bytes, data: Any, conversation_id: str
    ) -> web.StreamResponse:
        if (err := self._auth_error(request)) is not None:
            return err
        got = self._json_user(data)
        if isinstance(got, web.Response):
            return got
        obj, user = got
        conversation = self._owned(conversation_id, user)
        if conversation is None:
            return _error(404, "not_found", "Conversation Not Exists.")
        if obj.get("auto_generate"):
            first = conversation.messages[0].query if conversation.messages else ""
            conversation.name = first[:20] or "New conversation"
        else:
            conversation.name = str(obj.get("name") or "")
        conversation.updated_at = int(time.time())
        return _respond(200, (_dumps(conversation.to_json()) + "\n").encode())

    async def _feedback(
        self, request: web.BaseRequest, body: bytes, data: Any, message_id: str
    ) -> web.StreamResponse:
        if (err := self._auth_error(request)) is not None:
            return err
        got = self._json_user(data)
        if isinstance(got, web.Response):
            return got
        obj, user = got
        rating = obj.get("rating")
        if rating not in ("like", "dislike", None):
            return _param_error(f"{rating} is not a valid choice", "rating")
        message = self._messages.get(message_id)
        if message is None or message.user != user:
            return _error(404, "not_found", "Message Not Exists.")
        message.rating = rating
        return _respond(200, _SUCCESS)

    async def _suggested(
        self, request: web.BaseRequest, body: bytes, data: Any, message_id: str
    ) -> web.StreamResponse:
        if (err := self._auth_error(request)) is not None:
            return err
        if not request.query.get("user"):
            return _error(400, "invalid_param", "Arg user must be provided.")
        return _error(400, "bad_request", "Suggested Questions Is Disabled.")


class _Invalid:
    """Marks a body that is not valid JSON (None is valid JSON: `null`)."""


_INVALID: Any = _Invalid()


def _limit(raw: str | None) -> int | web.Response:
    if raw is None:
        return 20
    try:
        value = int(raw)
    except ValueError:
        return _param_error(f"invalid literal for int() with base 10: '{raw}'", "limit")
    if not 1 <= value <= 100:
        return _param_error(
            f"Invalid {{arg}}: {value}. {{arg}} must be between 1 and 100.", "limit"
        )
    return value
