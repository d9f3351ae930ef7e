"""ChatDify and DifyClient against replayed recordings of a real Dify 0.15.3 server."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from conftest import DIFY_URL, replay
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from dify_lc import ChatDify, DifyClient
from dify_lc.errors import (
    AuthenticationError,
    BadRequestError,
    DifyLCError,
    NotFoundError,
)
from dify_lc.protocol.dify import Request

ANSWER = "Hello! This is a mocked gpt-4o reply from the LiteLLM proxy."
KEY = "app-cassette-key-0123456789abcdef"
CONV = "7262f16a-91ae-4f25-9978-7461eb7f22c6"
CONV2 = "b7e0dcd5-55be-4acb-98a1-55c057e139ee"
MSG = "368307c6-78ec-4ddf-b539-d7a03f9d946c"
NIL = "00000000-0000-0000-0000-000000000000"


def dify(**kw: object) -> ChatDify:
    return ChatDify(api_key=KEY, base_url=DIFY_URL, user="peer-user-1", max_retries=0, **kw)


def test_blocking_answer_metadata_usage_and_decimal_prices() -> None:
    with replay("dify/s01-chat-blocking") as rec:
        msg = dify(response_mode="blocking").invoke("Hello there")
    assert msg.content == ANSWER
    meta = msg.response_metadata
    assert meta["conversation_id"] == "7262f16a-91ae-4f25-9978-7461eb7f22c6"
    assert meta["message_id"] == "368307c6-78ec-4ddf-b539-d7a03f9d946c"
    assert meta["task_id"] == "a8e2ceca-5a0e-4c83-9cd7-7822ea5b3021"
    assert meta["mode"] == "chat"
    assert meta["usage"]["total_price"] == Decimal("0E-7")
    assert meta["usage"]["currency"] == "USD"
    assert isinstance(meta["usage"]["latency"], float)
    assert msg.usage_metadata == {"input_tokens": 10, "output_tokens": 20, "total_tokens": 30}
    body = json.loads(rec.sent[0].body)
    assert body == {
        "inputs": {},
        "query": "Hello there",
        "response_mode": "blocking",
        "user": "peer-user-1",
    }


def test_stream_yields_every_token_and_usage_once() -> None:
    with replay("dify/s02-chat-streaming") as rec:
        chunks = list(dify().stream("Stream please", inputs={"name": "Ada"}))
    text_chunks = [c for c in chunks if c.content]
    assert len(text_chunks) == 20  # one per `message` event; the final answer "" is skipped
    assert "".join(c.content for c in chunks) == ANSWER
    with_usage = [c for c in chunks if c.usage_metadata]
    assert len(with_usage) == 1
    assert with_usage[0].usage_metadata == {
        "input_tokens": 14,
        "output_tokens": 19,
        "total_tokens": 33,
    }
    total = chunks[0]
    for c in chunks[1:]:
        total += c
    assert total.response_metadata["conversation_id"] == "b7e0dcd5-55be-4acb-98a1-55c057e139ee"
    assert total.response_metadata["task_id"] == "bf8b33cd-5292-4854-982f-e1efe6b00595"
    assert json.loads(rec.sent[0].body)["inputs"] == {"name": "Ada"}
    assert json.loads(rec.sent[0].body)["response_mode"] == "streaming"


def test_invoke_aggregates_the_stream_by_default() -> None:
    with replay("dify/s02-chat-streaming"):
        msg = dify().invoke("Stream please", inputs={"name": "Ada"})
    assert isinstance(msg, AIMessage)
    assert msg.content == ANSWER
    assert msg.usage_metadata == {"input_tokens": 14, "output_tokens": 19, "total_tokens": 33}
    assert msg.response_metadata["message_id"] == "6e12748b-75c7-4361-a075-73caf3755088"


async def test_async_stream_replay() -> None:
    with replay("dify/s02-chat-streaming"):
        model = dify(async_backend="httpx")
        text = "".join([c.content async for c in model.astream("Stream please")])
    assert text == ANSWER


def test_conversation_id_sends_only_the_last_human_message() -> None:
    history = [
        SystemMessage("be nice"),
        HumanMessage("Hello there"),
        AIMessage(ANSWER),
        HumanMessage("And again"),
    ]
    conv = "7262f16a-91ae-4f25-9978-7461eb7f22c6"
    with replay("dify/s03-chat-second-turn-blocking") as rec:
        msg = dify(response_mode="blocking").invoke(history, conversation_id=conv)
    body = json.loads(rec.sent[0].body)
    assert body["query"] == "And again"
    assert body["conversation_id"] == conv
    assert msg.response_metadata["conversation_id"] == conv


def test_conversation_id_from_configurable() -> None:
    conv = "7262f16a-91ae-4f25-9978-7461eb7f22c6"
    with replay("dify/s04-chat-second-turn-streaming") as rec:
        chunks = list(
            dify().stream("Third turn", config={"configurable": {"conversation_id": conv}})
        )
    assert json.loads(rec.sent[0].body)["conversation_id"] == conv
    assert "".join(c.content for c in chunks) == ANSWER


def test_history_is_folded_into_the_query_without_a_conversation() -> None:
    history = [HumanMessage("My name is Ada"), AIMessage("Hi Ada"), HumanMessage("Who am I?")]
    with replay("dify/s01-chat-blocking") as rec:
        dify(response_mode="blocking").invoke(history)
    assert json.loads(rec.sent[0].body)["query"] == (
        "Human: My name is Ada\nAI: Hi Ada\nHuman: Who am I?"
    )


@pytest.mark.parametrize(
    ("cassette", "kwargs", "error", "status", "code", "fragment"),
    [
        ("e01-bad-key-401", {}, AuthenticationError, 401, "unauthorized", "Access token"),
        ("e02-no-auth-header-401", {}, AuthenticationError, 401, "unauthorized", "Bearer"),
        ("e03-missing-user-400", {}, BadRequestError, 400, "invalid_param", "user"),
        ("e04-missing-inputs-400", {}, BadRequestError, 400, "invalid_param", "(inputs)"),
        ("e05-bad-response-mode-400", {}, BadRequestError, 400, "invalid_param", "valid"),
        ("e06-unknown-conversation-404", {}, NotFoundError, 404, "not_found", "Conversation"),
        ("e08-empty-query-400", {}, BadRequestError, 400, "invalid_param", "query"),
        ("e09-invalid-json-400", {}, BadRequestError, 400, "bad_request", "browser"),
        ("e10-conversation-other-user-404", {}, NotFoundError, 404, "not_found", "Conversation"),
        ("e11-input-too-long-400", {}, BadRequestError, 400, "invalid_param", "name"),
    ],
)
def test_error_transcripts_map_to_typed_errors(
    cassette: str,
    kwargs: dict[str, object],
    error: type[DifyLCError],
    status: int,
    code: str,
    fragment: str,
) -> None:
    with replay(f"dify/{cassette}"), pytest.raises(error) as info:
        dify(response_mode="blocking").invoke("hi", **kwargs)
    err = info.value
    assert err.status == status
    assert err.code == code
    assert fragment in err.message
    assert err.backend == "dify"
    assert err.response is not None
    assert err.response.status_code == status
    assert KEY not in str(err)
    assert KEY not in repr(err)
    assert not err.retryable


def test_streaming_request_error_is_a_plain_http_error_before_any_chunk() -> None:
    chunks = []
    with replay("dify/e07-unknown-conversation-streaming-404"), pytest.raises(NotFoundError):
        for c in dify().stream("hi", conversation_id="00000000-0000-0000-0000-000000000000"):
            chunks.append(c)
    assert chunks == []


def test_unknown_route_html_page_is_a_not_found_error() -> None:
    client = DifyClient(api_key=KEY, base_url=DIFY_URL)
    with replay("dify/x14-unknown-route"), pytest.raises(NotFoundError) as info:
        client.send(Request("GET", "/no-such-endpoint"))
    assert "404 Not Found" in info.value.message
    assert "HTML" in info.value.message


def test_method_not_allowed_is_a_bad_request() -> None:
    client = DifyClient(api_key=KEY, base_url=DIFY_URL)
    with replay("dify/x13-wrong-method"), pytest.raises(BadRequestError) as info:
        client.send(Request("GET", "/chat-messages"))
    assert info.value.status == 405


def test_client_endpoints() -> None:
    client = DifyClient(api_key=KEY, base_url=DIFY_URL)
    conv = "7262f16a-91ae-4f25-9978-7461eb7f22c6"
    with replay("dify/x01-parameters"):
        assert client.get_parameters()["opening_statement"] == "Hi! I am the peer test bot."
    with replay("dify/x04-messages") as rec:
        messages = client.get_messages(conv, user="peer-user-1")
    assert rec.sent[0].query  # conversation_id, user and limit travel in the query string
    assert messages["data"][0]["conversation_id"] == conv
    with replay("dify/x05-conversations"):
        assert client.get_conversations(user="peer-user-1")["data"]
    with replay("dify/x07-feedback") as rec:
        assert client.feedback(MSG, user="peer-user-1", rating="like") == {"result": "success"}
    with replay("dify/x09-stop-unknown-task") as rec:
        assert client.stop(NIL, user="peer-user-1") == {"result": "success"}
    assert json.loads(rec.sent[0].body) == {"user": "peer-user-1"}
    with replay("dify/x15-delete-conversation") as rec:
        assert client.delete_conversation(CONV2, user="peer-user-1") == {"result": "success"}
    assert rec.sent[0].method == "DELETE"
    assert json.loads(rec.sent[0].body) == {"user": "peer-user-1"}
    with replay("dify/x16-delete-conversation-again-404"), pytest.raises(NotFoundError):
        client.delete_conversation(CONV2, user="peer-user-1")
    with replay("dify/x12-messages-unknown-conversation"), pytest.raises(NotFoundError):
        client.get_messages("00000000-0000-0000-0000-000000000000", user="peer-user-1")


async def test_client_async_twins() -> None:
    client = DifyClient(api_key=KEY, base_url=DIFY_URL, async_backend="httpx")
    with replay("dify/x06-rename-conversation"):
        renamed = await client.arename_conversation(CONV, user="peer-user-1", name="Renamed")
    assert "name" in renamed
    with replay("dify/x10-stop-missing-user"), pytest.raises(BadRequestError):
        await client.astop(NIL, user="peer-user-1")


def test_suggested_disabled_and_missing_parameters_are_bad_requests() -> None:
    client = DifyClient(api_key=KEY, base_url=DIFY_URL)
    with replay("dify/x08-suggested-disabled"), pytest.raises(BadRequestError) as info:
        client.get_suggested(MSG, user="peer-user-1")
    assert info.value.code == "bad_request"
    assert "Suggested" in info.value.message
    with replay("dify/x11-messages-missing-conversation"), pytest.raises(BadRequestError) as info:
        client.send(Request("GET", "/messages", params={"user": "peer-user-1"}))
    assert "conversation_id" in info.value.message  # reqparse shape B names the parameter


def test_info_and_meta_bodies_decode() -> None:
    client = DifyClient(api_key=KEY, base_url=DIFY_URL)
    with replay("dify/x03-info"):
        assert "name" in client.send(Request("GET", "/info"))
    with replay("dify/x02-meta"):
        assert "tool_icons" in client.send(Request("GET", "/meta"))


async def test_async_chat_blocking_and_error_replay() -> None:
    model = dify(async_backend="httpx", response_mode="blocking")
    with replay("dify/s01-chat-blocking"):
        assert (await model.ainvoke("Hello there")).content == ANSWER
    with replay("dify/e01-bad-key-401"), pytest.raises(AuthenticationError):
        await model.ainvoke("hi")
