"""Property tests: the stream parsers and the error mapper on arbitrary input raise only typed
errors — never a crash, never a hang — and the SSE parser agrees with httpx-sse's."""

from __future__ import annotations

import itertools
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from dify_lc.errors import DifyLCError, ProtocolError
from dify_lc.protocol import dify, relay
from dify_lc.protocol.error_mapping import error_from_response, inband_error, parse_retry_after
from dify_lc.transport import _SSEParser

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
events = st.sampled_from(
    [
        "message",
        "agent_message",
        "message_end",
        "message_replace",
        "error",
        "workflow_finished",
        "text_chunk",
        "node_started",
        "ping",
        "tts_message",
        "unknown_event",
        "",
    ]
)


def _payload(name: str, body: object) -> str:
    if isinstance(body, dict):
        return json.dumps({"event": name, **body})
    return json.dumps(body)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.tuples(events, json_values | st.text(max_size=50)), max_size=12),
    st.sampled_from(["chat", "completion", "workflow"]),
)
def test_dify_stream_only_raises_typed_errors(frames: list[tuple[str, object]], kind: str) -> None:
    state = dify.DifyStream(kind=kind, progress=True)  # type: ignore[arg-type]
    try:
        for name, body in frames:
            data = body if isinstance(body, str) else _payload(name, body)
            state.feed(name, data)
        state.finish()
    except DifyLCError:
        pass


@settings(max_examples=400, deadline=None)
@given(st.lists(json_values | st.text(max_size=50) | st.just("[DONE]"), max_size=12))
def test_relay_stream_only_raises_typed_errors(frames: list[object]) -> None:
    state = relay.RelayStream()
    try:
        for body in frames:
            state.feed("", body if isinstance(body, str) else json.dumps(body))
        state.finish()
        state.end()
    except DifyLCError:
        pass


@settings(max_examples=400, deadline=None)
@given(
    st.integers(min_value=100, max_value=599),
    st.dictionaries(
        st.sampled_from(
            [
                "retry-after",
                "retry-after-ms",
                "llm_provider-retry-after",
                "content-type",
                "x-should-retry",
            ]
        ),
        st.text(max_size=40),
        max_size=4,
    ),
    st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()),
)
def test_error_mapper_always_returns_a_typed_error(
    status: int, headers: dict[str, str], body: bytes
) -> None:
    err = error_from_response(status, headers, body, backend="b")
    assert isinstance(err, DifyLCError)
    assert err.status == status
    assert isinstance(str(err), str)
    retry_after = parse_retry_after(headers)
    assert retry_after is None or retry_after >= 0


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=10), json_values, max_size=6))
def test_inband_error_mapping(payload: dict[str, object]) -> None:
    assert isinstance(inband_error(payload, backend="b"), DifyLCError)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400), st.integers(1, 50))
def test_raw_bytes_through_the_sse_decoder_and_parser(raw: bytes, size: int) -> None:
    feed = _SSEParser(300, lambda: ProtocolError("too large")).feed
    state = dify.DifyStream()
    try:
        for i in range(0, len(raw), size):
            for event, data in feed(raw[i : i + size]):
                state.feed(event, data)
    except (DifyLCError, UnicodeDecodeError):  # the transport maps the latter to ProtocolError
        pass


sse_text = st.lists(
    st.sampled_from(
        ["data: ", "data:", "event: message", "event:x", ": PING", "id: 1", "retry: 5", "x",
         "é", "🌍", "\n", "\n", "\r\n", "\r"]
    ),
    max_size=40,
).map("".join)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(sse_text, st.lists(st.integers(0, 200), max_size=8))
def test_sse_parser_matches_httpx_sse_however_the_bytes_are_cut(text: str, cuts: list[int]) -> None:
    from httpx_sse._decoders import SSEDecoder, SSELineDecoder

    lines, decoder = SSELineDecoder(), SSEDecoder()
    reference = [
        (sse.event, sse.data)
        for line in lines.decode(text) + lines.flush()
        if (sse := decoder.decode(line)) is not None
    ] if text else []  # fmt: skip
    raw = text.encode()
    bounds = [0, *sorted(c for c in cuts if c < len(raw)), len(raw)]
    feed = _SSEParser(1 << 20, lambda: ProtocolError("too large")).feed
    got = [event for a, b in itertools.pairwise(bounds) for event in feed(raw[a:b])]
    assert got == reference
