"""`FakeRelay`: a fake OpenAI-compatible relay with LiteLLM 1.106's bytes.

Wire format (PROTOCOL.md §10, shared/peers/litellm): compact JSON in raw UTF-8 with no trailing
newline. Streams are `data: <chunk>\\n\\n` frames ending with `data: [DONE]\\n\\n`; the first
delta is `{"role":"assistant","content":"Hel"}`, ordinary chunks have no `finish_reason` key,
the finish chunk is `"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]`, and with
`stream_options.include_usage` a usage chunk (`"choices":[{"index":0,"delta":{}}]` + `usage`)
comes before `[DONE]`.

Served: `POST /v1/chat/completions` (and `/chat/completions`), `GET /v1/models` (and `/models`).

- Auth: `Authorization: Bearer <key>` or `x-api-key: <key>`. No key: 401 `auth_error`
  "No api key passed in."; no `Bearer ` prefix: 401 "Malformed API Key"; another key: 401
  `auth_error` "Invalid proxy server token passed" (LiteLLM with a database), or with
  `bad_key_error="no_db"` the 400 `no_db_connection` that a database-less LiteLLM sends.
- `model` is echoed. With `models=[...]` an unlisted model gets LiteLLM's 400 "Invalid model
  name"; without, any model is served. Missing `messages`: 400 `invalid_request_error`.
- Tool calls: when the request has `tools` and either the last message is a user message
  containing "tool" (any case), `tool_choice` is "required" or names a function, or the fault
  has `tool_call=True`, the reply calls that tool (else the first) with arguments built from its
  JSON schema (integer 1, number 1.5, string "x", boolean true, first `enum` value, arrays of
  one item, nested objects) and `finish_reason: "tool_calls"`. Streams send the call as OpenAI
  deltas: the id and name with empty arguments first, then argument fragments. A tool result as
  the last message gets a text reply, so agent loops end. `tool_choice: "none"` never calls.
- `response_format` `json_schema`: the content is an object built from the schema the same way;
  `json_object`: `{"answer": <answer>}`.
- Usage: `prompt_tokens = (characters of all message text) // 4 + 1`, `completion_tokens` = the
  number of content chunks; cost is gpt-4o's list price ($2.50 / $10 per million tokens).
- `Fault(pings=N)` sends `: PING\n\n` SSE comments (new-api's keep-alive; LiteLLM sends
  none) before the first chunk.
- The in-band error of `Fault(inband_error_after=N)` is `data: {"error": {...}}` in
  `json.dumps` default spacing, as LiteLLM's proxy writes it, and the body ends without `[DONE]`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any, Literal

from aiohttp import web

from ._dify import DEFAULT_ANSWER
from ._faults import Fault
from ._server import FakeServer, _abort, merge_headers, parse_json
from ._stream import StreamPlan, Timing, drive, spoil_body

__all__ = ["FakeRelay"]

_VERSION = "1.106.2"
_MODEL_CREATED = 1677610602
_JSON_HEADERS = {"content-type": "application/json"}
_PHRASES = {s.value: s.phrase for s in HTTPStatus}
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "auth_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    429: "throttling_error",
}
_NOT_FOUND = b'{"detail":"Not Found"}'
_NOT_ALLOWED = b'{"detail":"Method Not Allowed"}'
_INPUT_PRICE = 2.5e-6
_OUTPUT_PRICE = 1e-5


def _compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _respond(status: int, body: bytes, headers: Mapping[str, str] = _JSON_HEADERS) -> web.Response:
    return web.Response(
        body=body, status=status, reason=_PHRASES.get(status, "Error"), headers=headers
    )


def _error_body(message: str, type_: str, code: str, param: str | None = None) -> bytes:
    error = {"message": message, "type": type_, "param": param, "code": code}
    return _compact({"error": error}).encode()


def _error(status: int, message: str, type_: str, param: str | None = None) -> web.Response:
    return _respond(status, _error_body(message, type_, str(status), param))


def _mock_rate_limit_message(model: str) -> str:
    return (
        "litellm.RateLimitError: this is a mock rate limit error\n\n"
        f"LiteLLM: model group '{model}' failed with the error above. No fallback was attempted."
    )


def _rpm_limit_message(model: str) -> str:
    return (
        "litellm.RateLimitError: Model rate limit exceeded. RPM limit=2, current usage=3\n\n"
        f"LiteLLM: model group '{model}' failed with the error above. No fallback was attempted."
    )


def _text(content: Any) -> str:
    """The text of a message `content`: a string or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def example_from_schema(schema: Any, root: Any = None, depth: int = 0) -> Any:
    """A deterministic instance of a JSON schema: 1, 1.5, "x", true, first enum value..."""
    if not isinstance(schema, dict) or depth > 8:
        return "x"
    root = schema if root is None else root
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for key in ref[2:].split("/"):
            target = target.get(key, {}) if isinstance(target, dict) else {}
        return example_from_schema(target, root, depth + 1)
    if schema.get("enum"):
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for combinator in ("anyOf", "oneOf", "allOf"):
        options = schema.get(combinator)
        if isinstance(options, list) and options:
            usable = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
            return example_from_schema((usable or options)[0], root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None and "properties" in schema:
        kind = "object"
    if kind == "object":
        properties = schema.get("properties") or {}
        return {k: example_from_schema(v, root, depth + 1) for k, v in properties.items()}
    if kind == "array":
        items = schema.get("items")
        return [example_from_schema(items, root, depth + 1)] if isinstance(items, dict) else []
    return {"integer": 1, "number": 1.5, "boolean": True, "null": None}.get(str(kind), "x")


class FakeRelay(FakeServer):
    """A fake LiteLLM-like relay on `http://127.0.0.1:<port>/v1`; see the module docstring.

    Args:
        api_key: the accepted key; None accepts any key (one must still be sent).
        answer: the reply text, streamed in `chunk_size`-character pieces.
        model: the model listed by `/v1/models` when `models` is None.
        models: when given, the only models served; others get LiteLLM's 400.
        chunk_delay / first_token_delay: default timing of successful streams (seconds).
        bad_key_error: "auth_error" (401) or "no_db" (400, peers/litellm/04) for a wrong key.
        seed: seeds the ids, so runs are reproducible.
        record: keep `requests` (turn off for long benchmarks).
    """

    _thread_name = "fake-relay"

    def __init__(
        self,
        *,
        api_key: str | None = "sk-test",
        answer: str = DEFAULT_ANSWER,
        chunk_size: int = 3,
        model: str = "gpt-4o",
        models: Sequence[str] | None = None,
        chunk_delay: float = 0.0,
        first_token_delay: float = 0.0,
        bad_key_error: Literal["auth_error", "no_db"] = "auth_error",
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
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        self.api_key = api_key
        self.chunk_size = chunk_size
        self.model = model
        self.models = None if models is None else list(models)
        self.bad_key_error = bad_key_error
        self.answer = answer

    @property
    def answer(self) -> str:
        """The reply text; assigning it rebuilds the pre-escaped chunks."""
        return self._answer

    @answer.setter
    def answer(self, value: str) -> None:
        self._answer = value
        self._chunks = self._split(value)
        self._chunk_json = [_compact(c) for c in self._chunks]

    def _split(self, text: str) -> list[str]:
        size = self.chunk_size
        return [text[i : i + size] for i in range(0, len(text), size)] or [""]

    # -- routing and auth ------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest, body: bytes) -> web.StreamResponse:
        ok, data = parse_json(body)
        self._record(request, body, data)
        path = request.path.removeprefix("/v1")
        if path == "/chat/completions":
            if request.method != "POST":
                return _respond(405, _NOT_ALLOWED, {**_JSON_HEADERS, "allow": "POST"})
            return await self._chat(request, ok, data)
        if path == "/models":
            if request.method != "GET":
                return _respond(405, _NOT_ALLOWED, {**_JSON_HEADERS, "allow": "GET"})
            err = self._auth_error(request)
            return self._models() if err is None else err
        return _respond(404, _NOT_FOUND)

    def _auth_error(self, request: web.BaseRequest) -> web.Response | None:
        header = request.headers.get("Authorization")
        if header is None:
            key = request.headers.get("x-api-key") or request.headers.get("api-key")
            if key is None:
                return _respond(
                    401,
                    _error_body(
                        "Authentication Error, No api key passed in.", "auth_error", "401", "None"
                    ),
                )
        elif not header.startswith("Bearer "):
            message = (
                "Authentication Error, Malformed API Key passed in. "
                "Ensure Key has `Bearer ` prefix."
            )
            return _respond(401, _error_body(message, "auth_error", "401", "None"))
        else:
            key = header[7:].strip()
        if self.api_key is None or key == self.api_key:
            return None
        if self.bad_key_error == "no_db":
            return _respond(400, _error_body("No connected db.", "no_db_connection", "400"))
        message = (
            "Authentication Error, Invalid proxy server token passed. "
            f"Received API Key = sk-...{key[-4:]}, Unable to find token in cache or "
            "`LiteLLM_VerificationTokenTable`"
        )
        return _respond(401, _error_body(message, "auth_error", "401", "None"))

    def _models(self) -> web.Response:
        names = self.models if self.models is not None else [self.model]
        data = [
            {"id": m, "object": "model", "created": _MODEL_CREATED, "owned_by": "openai"}
            for m in names
        ]
        return _respond(200, _compact({"data": data, "object": "list"}).encode())

    def _fault_response(self, fault: Fault, data: Any) -> web.Response:
        status = fault.status or 500
        headers = merge_headers({} if fault.kind == "html" else _JSON_HEADERS, fault.headers)
        if fault.body is not None:
            return _respond(status, fault.body, headers)
        model = data.get("model") if isinstance(data, dict) else None
        model = str(model or self.model)
        if fault.kind == "rate_limited" or status == 429:
            by_router = bool(fault.headers and "llm_provider-retry-after" in fault.headers)
            message = _rpm_limit_message(model) if by_router else _mock_rate_limit_message(model)
            return _respond(status, _error_body(message, "throttling_error", str(status)), headers)
        if status >= 500:
            message = f"litellm.InternalServerError: {_PHRASES.get(status, 'Server Error')}"
            body = _error_body(message, "internal_server_error", str(status))
            return _respond(status, body, headers)
        type_ = _ERROR_TYPES.get(status, "api_error")
        return _respond(
            status, _error_body(_PHRASES.get(status, "Error"), type_, str(status)), headers
        )

    # -- chat completions ------------------------------------------------------------------

    async def _chat(self, request: web.BaseRequest, ok: bool, data: Any) -> web.StreamResponse:
        fault = self._next_fault()
        if (
            fault is not None
            and (early := await self._transport_fault(request, fault, data)) is not None
        ):
            return early
        if (err := self._auth_error(request)) is not None:
            return err
        if not ok or not isinstance(data, dict):
            return _error(400, "Invalid JSON in request body.", "invalid_request_error")
        model = data.get("model")
        if model is None or (self.models is not None and model not in self.models):
            message = (
                f"/chat/completions: Invalid model name passed in model={model}. "
                "Call `/v1/models` to view available models for your key."
            )
            body = {
                "error": {
                    "message": message,
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "400",
                    "provider_specific_fields": {"error": message},
                }
            }
            return _respond(400, _compact(body).encode())
        messages = data.get("messages")
        if not isinstance(messages, list):
            return _error(
                400,
                "/chat/completions: Missing required parameter: 'messages'.",
                "invalid_request_error",
                "messages",
            )
        model = str(model)
        prompt_tokens = (
            sum(len(_text(m.get("content"))) for m in messages if isinstance(m, dict)) // 4 + 1
        )
        reply = _Reply.decide(self, data, messages, fault)
        timing = Timing.resolve(fault, self.first_token_delay, self.chunk_delay, None)
        call_id = self._new_uuid()
        completion_id = "chatcmpl-" + self._new_uuid()
        created = int(time.time())
        ids = (completion_id, created, model, call_id)
        if data.get("stream"):
            options = data.get("stream_options")
            include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
            return await self._stream(
                request, reply, ids, prompt_tokens, include_usage, timing, fault
            )
        return await self._blocking(request, reply, ids, prompt_tokens, timing, fault)

    def _headers(self, model: str, call_id: str, cost: float | None) -> dict[str, str]:
        headers = {
            "x-litellm-call-id": call_id,
            "x-litellm-version": _VERSION,
            "x-litellm-model-group": model,
            "x-litellm-attempted-retries": "0",
            "x-litellm-attempted-fallbacks": "0",
        }
        if cost is not None:
            headers["x-litellm-response-cost"] = repr(cost)
        return headers

    async def _blocking(
        self,
        request: web.BaseRequest,
        reply: _Reply,
        ids: tuple[str, int, str, str],
        prompt_tokens: int,
        timing: Timing,
        fault: Fault | None,
    ) -> web.StreamResponse:
        completion_id, created, model, call_id = ids
        completion_tokens = reply.token_count()
        await self._sleep(timing.blocking_duration(completion_tokens))
        if fault is not None and fault.inband_error_after is not None:
            body = _error_body(_mock_rate_limit_message(model), "throttling_error", "429")
            return _respond(429, body)
        message: dict[str, Any]
        if reply.tool is not None:
            call = {
                "id": reply.tool_call_id,
                "type": "function",
                "function": {"name": reply.tool, "arguments": reply.text},
            }
            message = {"content": None, "role": "assistant", "tool_calls": [call]}
            finish_reason = "tool_calls"
        else:
            message = {"content": reply.text, "role": "assistant"}
            finish_reason = "stop"
        obj = {
            "id": completion_id,
            "created": created,
            "model": model,
            "object": "chat.completion",
            "choices": [{"finish_reason": finish_reason, "index": 0, "message": message}],
            "usage": {
                "completion_tokens": completion_tokens,
                "prompt_tokens": prompt_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        body = _compact(obj).encode()
        cost = prompt_tokens * _INPUT_PRICE + completion_tokens * _OUTPUT_PRICE
        headers = {**_JSON_HEADERS, **self._headers(model, call_id, cost)}
        body = spoil_body(body, fault)
        if fault is not None and fault.invalid_json:
            body = body[: len(body) // 2]
        if fault is not None and fault.reset_after:
            resp = web.StreamResponse(status=200, reason="OK", headers=headers)
            resp.content_length = len(body)
            await resp.prepare(request)
            await resp.write(body[: len(body) // 2])
            await _abort(request)
        return _respond(200, body, headers)

    async def _stream(
        self,
        request: web.BaseRequest,
        reply: _Reply,
        ids: tuple[str, int, str, str],
        prompt_tokens: int,
        include_usage: bool,
        timing: Timing,
        fault: Fault | None,
    ) -> web.StreamResponse:
        completion_id, created, model, call_id = ids
        model_json = _compact(model)
        pre = (
            f'data: {{"id":"{completion_id}","object":"chat.completion.chunk",'
            f'"created":{created},"model":{model_json},"choices":[{{"index":0,"delta":'
        )
        post = "}]}\n\n"
        if reply.tool is not None:
            first = (
                '{"role":"assistant","content":null,"tool_calls":[{"index":0,'
                f'"id":"{reply.tool_call_id}","type":"function",'
                f'"function":{{"name":{_compact(reply.tool)},"arguments":""}}}}]}}'
            )
            deltas = [first] + [
                '{"tool_calls":[{"index":0,"function":{"arguments":' + _compact(f) + "}}]}"
                for f in reply.fragments()
            ]
            finish_reason = "tool_calls"
        else:
            pieces = reply.chunk_json()
            deltas = ['{"role":"assistant","content":' + pieces[0] + "}"] + [
                '{"content":' + p + "}" for p in pieces[1:]
            ]
            finish_reason = "stop"
        content = [pre + d + post for d in deltas]

        def finish(n: int, stopped: bool) -> Sequence[str]:
            frames = [pre + '{},"finish_reason":"' + finish_reason + '"' + post]
            if include_usage:
                usage = {
                    "completion_tokens": n,
                    "prompt_tokens": prompt_tokens,
                    "total_tokens": prompt_tokens + n,
                    "completion_tokens_details": {"reasoning_tokens": 0, "text_tokens": n},
                    "cost": prompt_tokens * _INPUT_PRICE + n * _OUTPUT_PRICE,
                }
                frames.append(
                    f'data: {{"id":"{completion_id}","created":{created},"model":{model_json},'
                    '"object":"chat.completion.chunk","choices":[{"index":0,"delta":{}}],'
                    f'"usage":{_compact(usage)}}}\n\n'
                )
            frames.append("data: [DONE]\n\n")
            return frames

        def error() -> str:
            error = {
                "message": _mock_rate_limit_message(model),
                "type": "throttling_error",
                "param": None,
                "code": "429",
            }
            return "data: " + json.dumps({"error": error}) + "\n\n"

        invalid = pre + deltas[0][: len(deltas[0]) // 2] + "\n\n"
        plan = StreamPlan(content, finish, error, invalid, ping=": PING\n\n")
        headers = {
            "content-type": "text/event-stream; charset=utf-8",
            "cache-control": "no-cache",
            "x-accel-buffering": "no",
            **self._headers(model, call_id, None),
        }
        resp = web.StreamResponse(status=200, reason="OK", headers=headers)
        await resp.prepare(request)
        await drive(request, resp, plan, timing, fault)
        return resp


class _Reply:
    """What the fake model answers: text, JSON text, or a call to one tool."""

    __slots__ = ("_relay", "text", "tool", "tool_call_id")

    def __init__(self, relay: FakeRelay, text: str, tool: str | None, tool_call_id: str) -> None:
        self._relay = relay
        self.text = text
        self.tool = tool
        self.tool_call_id = tool_call_id

    @classmethod
    def decide(
        cls, relay: FakeRelay, data: dict[str, Any], messages: list[Any], fault: Fault | None
    ) -> _Reply:
        tool = _pick_tool(data, messages, fault)
        if tool is not None:
            function = tool.get("function") or {}
            arguments = _compact(example_from_schema(function.get("parameters") or {}))
            call_id = "call_" + relay._new_uuid().replace("-", "")[:24]
            return cls(relay, arguments, str(function.get("name", "tool")), call_id)
        response_format = data.get("response_format")
        if isinstance(response_format, dict):
            kind = response_format.get("type")
            if kind == "json_schema":
                spec = response_format.get("json_schema") or {}
                schema = spec.get("schema") if isinstance(spec, dict) else None
                return cls(relay, _compact(example_from_schema(schema or {})), None, "")
            if kind == "json_object":
                return cls(relay, _compact({"answer": relay.answer}), None, "")
        return cls(relay, relay.answer, None, "")

    def chunk_json(self) -> list[str]:
        if self.text is self._relay.answer:
            return self._relay._chunk_json
        return [_compact(c) for c in self._relay._split(self.text)]

    def fragments(self) -> list[str]:
        size = max(self._relay.chunk_size, 8)
        return [self.text[i : i + size] for i in range(0, len(self.text), size)] or [""]

    def token_count(self) -> int:
        if self.tool is not None:
            return 1 + len(self.fragments())
        return len(self.chunk_json())


def _pick_tool(
    data: dict[str, Any], messages: list[Any], fault: Fault | None
) -> dict[str, Any] | None:
    tools = data.get("tools")
    if not isinstance(tools, list) or not tools:
        return None
    choice = data.get("tool_choice")
    if choice == "none":
        return None
    named = None
    if isinstance(choice, dict):
        named = (choice.get("function") or {}).get("name")
    forced = named is not None or choice == "required" or (fault is not None and fault.tool_call)
    if not forced:
        last = messages[-1] if messages else None
        if not (
            isinstance(last, dict)
            and last.get("role") == "user"
            and "tool" in _text(last.get("content")).lower()
        ):
            return None
    for tool in tools:
        if named is not None and isinstance(tool, dict):
            function = tool.get("function") or {}
            if function.get("name") == named:
                return tool
    first = tools[0]
    return first if isinstance(first, dict) else None
