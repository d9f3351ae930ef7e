"""Sans-I/O parsers (the SSE parser included) and error mapping, fed with real servers' bytes."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from dify_lc.errors import (
    AuthenticationError,
    BackendConfigError,
    BadRequestError,
    InBandStreamError,
    NotFoundError,
    ProtocolError,
    RateLimitError,
    ServerError,
    StreamInterruptedError,
    WorkflowRunFailedError,
)
from dify_lc.protocol import dify, relay
from dify_lc.protocol.error_mapping import error_from_response, parse_retry_after
from dify_lc.protocol.events import AnswerReplaced, NodeEvent, StreamEnd, TextDelta
from dify_lc.transport import _SSEParser

ENV = '"conversation_id": "c1", "message_id": "m1", "created_at": 1, "task_id": "t1", "id": "m1"'


def msg(answer: str) -> str:
    return '{"event": "message", ' + ENV + ', "answer": ' + json.dumps(answer) + "}"


END = (
    '{"event": "message_end", ' + ENV + ', "metadata": {"usage": {"prompt_tokens": 3, '
    '"completion_tokens": 2, "total_tokens": 5, "total_price": "0.0012890", "currency": "USD", '
    '"latency": 0.5}}, "files": null}'
)


def test_ping_frame_without_data_is_skipped() -> None:
    s = dify.DifyStream()
    assert s.feed("ping", "") is None  # `event: ping` has no data line
    assert s.feed("message", msg("Hi")) == TextDelta("Hi")


def test_ascii_escaped_surrogate_pairs_decode() -> None:
    s = dify.DifyStream()
    out = s.feed(
        "message", '{"event": "message", "answer": "\\u00fc \\ud83c\\udf0d", "task_id": "t"}'
    )
    assert out == TextDelta("ü 🌍")


def test_normal_end_with_empty_final_answer_and_decimal_prices() -> None:
    s = dify.DifyStream()
    assert s.feed("", msg("Hel")) == TextDelta("Hel")
    assert s.feed("", msg("")) is None  # the final answer "" of a normal end
    end = s.feed("", END)
    assert isinstance(end, StreamEnd)
    assert end.usage is not None
    assert end.usage.total_price == Decimal("0.0012890")
    assert end.usage.input_tokens == 3
    s.finish()  # no error: message_end was seen
    assert (s.task_id, s.conversation_id, s.message_id) == ("t1", "c1", "m1")


def test_inband_error_before_first_token_is_retryable() -> None:
    s = dify.DifyStream()
    err = '{"event": "error", "message_id": "m1", "code": "completion_request_error", "status": 400, "message": "[openai] 429"}'
    with pytest.raises(InBandStreamError) as info:
        s.feed("", err)
    assert info.value.retryable
    assert info.value.code == "completion_request_error"
    assert s.task_id is None  # error events carry no task id


def test_inband_error_after_first_token_is_a_stream_interruption_with_partial_text() -> None:
    s = dify.DifyStream()
    s.feed("", msg("Hello "))
    s.feed("", msg("wor"))
    err = '{"event": "error", "code": "internal_server_error", "status": 500, "message": "boom"}'
    with pytest.raises(StreamInterruptedError) as info:
        s.feed("", err)
    assert info.value.partial_text == "Hello wor"
    assert not info.value.retryable
    assert not info.value.allows_fallback
    assert info.value.counts_as_failure
    assert isinstance(info.value.__cause__, InBandStreamError)


def test_cut_off_stream_raises_at_end_of_body() -> None:
    s = dify.DifyStream()
    with pytest.raises(ProtocolError):
        s.finish()
    s = dify.DifyStream()
    s.feed("", msg("partial"))
    with pytest.raises(StreamInterruptedError) as info:
        s.finish()
    assert info.value.partial_text == "partial"


def test_invalid_json_data_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        dify.DifyStream().feed("", "{not json")


def test_message_replace_replaces_the_answer() -> None:
    s = dify.DifyStream()
    s.feed("", msg("bad words"))
    out = s.feed(
        "",
        '{"event": "message_replace", "task_id": "t1", "answer": "[removed]", "reason": "moderation"}',
    )
    assert out == AnswerReplaced("[removed]", "moderation")
    assert s.text == "[removed]"


def test_agent_message_is_text_and_unknown_events_are_ignored() -> None:
    s = dify.DifyStream()
    assert s.feed("", '{"event": "agent_thought", "task_id": "t", "thought": "hmm"}') is None
    assert s.feed("", '{"event": "agent_message", "task_id": "t", "answer": "A"}') == TextDelta("A")
    assert s.feed("", '{"event": "human_input_required", "task_id": "t"}') is None
    assert s.feed("", '{"event": "tts_message", "task_id": "t", "audio": ""}') is None


def test_chatflow_failure_then_error_event() -> None:
    s = dify.DifyStream(kind="chat", progress=True)
    started = s.feed(
        "", '{"event": "workflow_started", "task_id": "t", "workflow_run_id": "r", "data": {}}'
    )
    assert isinstance(started, NodeEvent)
    # advanced-chat: workflow_finished(failed) is followed by an error event (PROTOCOL §5)
    s.feed(
        "",
        '{"event": "workflow_finished", "task_id": "t", "data": {"status": "failed", "error": "x"}}',
    )
    with pytest.raises(InBandStreamError):
        s.feed(
            "",
            '{"event": "error", "code": "invalid_param", "status": 400, "message": "Run failed: x"}',
        )


def test_workflow_stream_text_chunks_and_outputs() -> None:
    s = dify.DifyStream(kind="workflow")
    assert s.feed(
        "",
        '{"event": "text_chunk", "workflow_run_id": "r", "task_id": "t", "data": {"text": "Hi", "from_variable_selector": ["llm", "text"]}}',
    ) == TextDelta("Hi")
    end = s.feed(
        "",
        '{"event": "workflow_finished", "workflow_run_id": "r", "task_id": "t", "data": {"status": "succeeded", "outputs": {"text": "Hi"}}}',
    )
    assert isinstance(end, StreamEnd)
    assert s.workflow is not None
    assert s.workflow.outputs == {"text": "Hi"}
    s.finish()


def test_workflow_failed_in_http_200() -> None:
    body = {
        "task_id": "t",
        "workflow_run_id": "r",
        "data": {"status": "failed", "error": "boom", "outputs": None},
    }
    with pytest.raises(WorkflowRunFailedError) as info:
        dify.parse_workflow_result(body)
    assert "boom" in str(info.value)
    s = dify.DifyStream(kind="workflow")
    with pytest.raises(WorkflowRunFailedError):
        s.feed(
            "",
            '{"event": "workflow_finished", "task_id": "t", "data": {"status": "failed", "error": "boom"}}',
        )


def test_run_detail_json_string_outputs() -> None:
    body = {"task_id": "t", "data": {"status": "succeeded", "outputs": '{"text": "x"}'}}
    assert dify.parse_workflow_result(body).outputs == {"text": "x"}


def test_relay_usage_chunk_does_not_clear_finish_reason() -> None:
    s = relay.RelayStream()
    s.feed(
        "",
        '{"id":"c","model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"}}]}',
    )
    s.feed("", '{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}')
    s.feed(
        "",
        '{"id":"c","choices":[{"index":0,"delta":{}}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}',
    )
    s.feed("", "[DONE]")
    s.finish()
    end = s.end()
    assert end.finish_reason == "stop"
    assert end.usage is not None
    assert end.usage.total_tokens == 3


def test_relay_openai_usage_chunk_with_empty_choices() -> None:
    s = relay.RelayStream()
    assert (
        s.feed("", '{"id":"c","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}')
        is None
    )
    assert s.usage is not None
    assert s.usage.total_tokens == 2


def test_relay_midstream_error_frame() -> None:
    s = relay.RelayStream()
    s.feed("", '{"choices":[{"index":0,"delta":{"content":"x"}}]}')
    with pytest.raises(StreamInterruptedError) as info:
        s.feed("", '{"error":{"message":"upstream died","type":"server_error","code":500}}')
    assert info.value.partial_text == "x"
    s = relay.RelayStream()
    with pytest.raises(InBandStreamError):
        s.feed("", '{"error":{"message":"upstream died","type":"server_error","code":500}}')


def test_relay_stream_without_done_is_cut_off() -> None:
    s = relay.RelayStream()
    with pytest.raises(ProtocolError):
        s.finish()


def test_relay_tool_call_deltas() -> None:
    s = relay.RelayStream()
    out = s.feed(
        "",
        '{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":""}}]}}]}',
    )
    assert out is not None
    assert out[0].name == "f"
    assert s.has_content


# --------------------------------------------------------------------------- error mapping


@pytest.mark.parametrize(
    ("status", "body", "headers", "cls", "code"),
    [
        (
            429,
            b'{"error":{"message":"slow down","type":"throttling_error","param":null,"code":"429"}}',
            {},
            RateLimitError,
            "throttling_error",
        ),
        (
            400,
            b'{"code": "invalid_param", "message": "Too many requests. Please try again later. The current maximum concurrent requests allowed is 1.", "status": 400}\n',
            {},
            RateLimitError,
            "invalid_param",
        ),
        (
            429,
            b'{"code": "too_many_requests", "message": "Too many requests.", "status": 429}\n',
            {},
            RateLimitError,
            "too_many_requests",
        ),
        (429, b"", {}, RateLimitError, None),  # one-api's own limiter: empty body
        (
            400,
            b'{"code": "completion_request_error", "message": "[openai] Error: status code 429", "status": 400}\n',
            {},
            ServerError,
            "completion_request_error",
        ),
        (
            400,
            b'{"code": "provider_quota_exceeded", "message": "quota", "status": 400}\n',
            {},
            BackendConfigError,
            "provider_quota_exceeded",
        ),
        (
            403,
            b'{"code": "forbidden", "message": "The app\'s API service has been disabled.", "status": 403}\n',
            {},
            AuthenticationError,
            "forbidden",
        ),
        (
            400,
            b'{"errors":{"query":"Missing required parameter in the JSON body"},"message":"Input payload validation failed"}',
            {},
            BadRequestError,
            None,
        ),
        (
            500,
            b'{"message": "Internal Server Error", "code": "unknown"}\n',
            {},
            ServerError,
            "unknown",
        ),
        (
            504,
            b"<html><head><title>504 Gateway Time-out</title></head><body>nginx</body></html>",
            {"content-type": "text/html"},
            ServerError,
            None,
        ),
        (502, b"error code: 502", {"content-type": "text/plain"}, ServerError, None),
        (
            404,
            b'{"code": "not_found", "message": "Conversation Not Exists.", "status": 404}\n',
            {},
            NotFoundError,
            "not_found",
        ),
        (
            400,
            b'{"error":{"message":"bad","type":"new_api_error","code":""}}',
            {},
            BadRequestError,
            "new_api_error",
        ),
        (
            400,
            b'{"error":{"message":"bad","type":"invalid_request_error","code":1234}}',
            {},
            BadRequestError,
            "1234",
        ),
    ],
)
def test_error_shapes(
    status: int, body: bytes, headers: dict[str, str], cls: type, code: str | None
) -> None:
    err = error_from_response(status, headers, body, backend="b")
    assert type(err) is cls
    assert err.code == code
    assert err.status == status
    assert err.message


def test_html_error_page_message_is_its_title() -> None:
    err = error_from_response(
        504,
        {"content-type": "text/html"},
        b"<html><title>504 Gateway Time-out</title></html>",
        backend="b",
    )
    assert err.message == "504 Gateway Time-out (HTML error page)"


def test_secret_echoed_by_server_is_scrubbed() -> None:
    body = b'{"error":{"message":"key sk-test-key-0123456789echoed is invalid","type":"auth_error","code":"401"}}'
    err = error_from_response(401, {}, body, backend="b", secrets=["sk-test-key-0123456789echoed"])
    assert "sk-test-key-0123456789echoed" not in str(err)


def test_x_should_retry_overrides_the_status_rule() -> None:
    err = error_from_response(409, {"x-should-retry": "true"}, b"", backend="b")
    assert err.retryable
    err = error_from_response(503, {"x-should-retry": "false"}, b"", backend="b")
    assert not err.retryable


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after": "2"}, 2.0),
        ({"retry-after": "0.25"}, 0.25),
        ({"llm_provider-retry-after": "60"}, 60.0),
        ({"retry-after-ms": "100", "retry-after": "9"}, 0.1),  # ms first, like openai-python
        ({"retry-after": "Wed, 25 Nov 2026 16:00:10 GMT"}, 10.0),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "-3"}, None),
        ({}, None),
    ],
)
def test_retry_after_forms(headers: dict[str, str], expected: float | None) -> None:
    now = 1795622400.0  # Wed, 25 Nov 2026 16:00:00 GMT
    assert parse_retry_after(headers, now=now) == expected


# --------------------------------------------------------------------------- the SSE parser


def _parse(*chunks: bytes, limit: int = 1 << 20) -> list[tuple[str, str]]:
    parser = _SSEParser(limit, lambda: ProtocolError("too large"))
    return [event for chunk in chunks for event in parser.feed(chunk)]


def test_sse_lines_end_on_lf_crlf_or_cr_even_across_chunks() -> None:
    body = b"event: a\ndata: 1\n\nevent: b\r\ndata: 2\r\n\r\ndata: 3\r\rdata: 4\n\n"
    expected = [("a", "1"), ("b", "2"), ("message", "3"), ("message", "4")]
    assert _parse(body) == expected
    assert _parse(*(body[i : i + 1] for i in range(len(body)))) == expected  # byte by byte
    # A CRLF cut in two by a chunk boundary is one line end.
    assert _parse(b"data: 1\r", b"\n\r", b"\n") == [("message", "1")]


def test_sse_multibyte_character_split_by_a_chunk_boundary() -> None:
    body = 'data: {"answer": "ü 🌍"}\n\n'.encode()
    cut = body.index("🌍".encode()) + 2
    assert _parse(body[:cut], body[cut:]) == [("message", '{"answer": "ü 🌍"}')]


def test_sse_comments_multiline_data_and_an_unfinished_event() -> None:
    body = b": PING\n\ndata: a\ndata: b\n\ndata: cut off"
    assert _parse(body) == [("message", "a\nb")]  # the event the body ends in is dropped


def test_sse_invalid_utf8_raises() -> None:
    with pytest.raises(UnicodeDecodeError):
        _parse(b'data: {"answer": "\xff\xfe"}\n\n')


def test_sse_event_cap_counts_every_line_of_the_event() -> None:
    line = b"data: " + b"x" * 40 + b"\n"  # 47 bytes
    assert _parse(line * 2 + b"\n", limit=100) == [("message", "x" * 40 + "\n" + "x" * 40)]
    assert len(_parse((line * 2 + b"\n") * 5, limit=100)) == 5  # the cap is per event
    with pytest.raises(ProtocolError):
        _parse(line * 3 + b"\n", limit=100)


def test_sse_event_cap_trips_on_the_line_still_arriving() -> None:
    parser = _SSEParser(100, lambda: ProtocolError("too large"))
    assert list(parser.feed(b"data: " + b"x" * 90)) == []
    with pytest.raises(ProtocolError):
        list(parser.feed(b"x" * 10))  # no newline yet: raised before the rest arrives


def test_sse_events_before_the_error_come_out_first() -> None:
    parser = _SSEParser(100, lambda: ProtocolError("too large"))
    events = parser.feed(b"data: ok\n\ndata: " + b"x" * 200)
    assert next(events) == ("message", "ok")
    with pytest.raises(ProtocolError):
        next(events)
