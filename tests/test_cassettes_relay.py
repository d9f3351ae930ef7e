"""ChatRelay against replayed recordings of a real LiteLLM 1.106 proxy."""

from __future__ import annotations

import json

import pytest
from conftest import RELAY_URL, replay
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from pydantic import BaseModel

from dify_lc import ChatRelay
from dify_lc.errors import AuthenticationError, BadRequestError, RateLimitError

ANSWER = "Hello! This is a mocked gpt-4o reply from the LiteLLM proxy."
KEY = "sk-cassette-key-0123456789abcdef"


def relay(model: str = "gpt-4o", **kw: object) -> ChatRelay:
    return ChatRelay(model=model, api_key=KEY, base_url=RELAY_URL, max_retries=0, **kw)


def test_blocking_completion() -> None:
    with replay("relay/01-chat-blocking") as rec:
        msg = relay().invoke("Say hi")
    assert msg.content == ANSWER
    assert msg.usage_metadata == {"input_tokens": 10, "output_tokens": 20, "total_tokens": 30}
    assert msg.response_metadata["finish_reason"] == "stop"
    assert msg.response_metadata["model_name"] == "gpt-4o"
    body = json.loads(rec.sent[0].body)
    assert body == {"model": "gpt-4o", "messages": [{"role": "user", "content": "Say hi"}]}


def test_stream_with_usage_counts_usage_once_and_keeps_finish_reason() -> None:
    with replay("relay/03-chat-stream-include-usage") as rec:
        chunks = list(relay().stream("Say hi"))
    assert "".join(c.content for c in chunks) == ANSWER
    usage = [c.usage_metadata for c in chunks if c.usage_metadata]
    assert usage == [{"input_tokens": 9, "output_tokens": 19, "total_tokens": 28}]
    final = chunks[0]
    for c in chunks[1:]:
        final += c
    assert final.response_metadata["finish_reason"] == "stop"  # the usage chunk did not clear it
    body = json.loads(rec.sent[0].body)
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


def test_stream_without_usage_chunk() -> None:
    with replay("relay/02-chat-stream"):
        chunks = list(relay(stream_usage=False).stream("Say hi"))
    assert "".join(c.content for c in chunks) == ANSWER
    assert not any(c.usage_metadata for c in chunks)


async def test_async_stream_and_invoke() -> None:
    with replay("relay_litellm/03-chat-stream-include-usage"):
        text = "".join([c.content async for c in relay(async_backend="httpx").astream("Say hi")])
    assert text == ANSWER
    with replay("relay_litellm/01-chat-blocking"):
        msg = await relay(async_backend="httpx").ainvoke("Say hi")
    assert msg.content == ANSWER


def test_multi_turn_history_is_sent_in_openai_format() -> None:
    history = [
        SystemMessage("You are a terse assistant."),
        HumanMessage("Hello there"),
        AIMessage("Hi! How can I help?"),
        HumanMessage("Tell me a fact about Paris."),
    ]
    with replay("relay_litellm/04-multi-turn-system") as rec:
        msg = relay().invoke(history)
    assert msg.content == ANSWER
    assert json.loads(rec.sent[0].body)["messages"] == [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "Hello there"},
        {"role": "assistant", "content": "Hi! How can I help?"},
        {"role": "user", "content": "Tell me a fact about Paris."},
    ]


def test_sampling_parameters_reach_the_body() -> None:
    with replay("relay_litellm/05-sampling-params") as rec:
        relay(temperature=0.2, max_tokens=64).invoke("Say hi", stop=["\n\n", "END"])
    body = json.loads(rec.sent[0].body)
    assert body["temperature"] == 0.2
    assert body["max_tokens"] == 64
    assert body["stop"] == ["\n\n", "END"]


def test_tool_call_is_parsed() -> None:
    class GetWeather(BaseModel):
        """Current weather for a city"""

        city: str

    with replay("relay_litellm/13-tool-call-blocking") as rec:
        msg = relay("gpt-4o-tools").bind_tools([GetWeather]).invoke("What is the weather in Paris?")
    assert msg.tool_calls == [
        {
            "name": "get_weather",
            "args": {"city": "Paris"},
            "id": "call_mock_weather_1",
            "type": "tool_call",
        }
    ]
    assert msg.response_metadata["finish_reason"] == "tool_calls"
    assert json.loads(rec.sent[0].body)["tools"][0]["function"]["name"] == "GetWeather"


@pytest.mark.parametrize(
    ("cassette", "model", "error", "status", "retry_after"),
    [
        ("relay/04-wrong-key", "gpt-4o", AuthenticationError, 400, None),
        ("relay/05-no-key", "gpt-4o", AuthenticationError, 401, None),
        ("relay/07-rpm-limit-429", "gpt-4o-limited", RateLimitError, 429, 60.0),
        ("relay/09-upstream-429-mock", "always-429", RateLimitError, 429, None),
        ("relay/10-unknown-model", "no-such-model", BadRequestError, 400, None),
        ("relay/12-malformed-auth-header", "gpt-4o", AuthenticationError, 401, None),
        ("relay/13-bad-request-missing-messages", "gpt-4o", BadRequestError, 400, None),
        ("relay_litellm/07-wrong-key", "gpt-4o", AuthenticationError, 400, None),
        ("relay_litellm/08-no-key", "gpt-4o", AuthenticationError, 401, None),
        ("relay_litellm/09-rpm-limit-429", "gpt-4o-limited", RateLimitError, 429, 60.0),
        ("relay_litellm/11-upstream-429-mock", "always-429", RateLimitError, 429, None),
        ("relay_litellm/12-unknown-model", "no-such-model", BadRequestError, 400, None),
    ],
)
def test_error_transcripts(
    cassette: str, model: str, error: type, status: int, retry_after: float | None
) -> None:
    with replay(cassette), pytest.raises(error) as info:
        relay(model).invoke("Say hi")
    err = info.value
    assert err.status == status
    assert err.retry_after == retry_after
    assert KEY not in str(err)
    assert err.backend == "relay"


def test_rate_limit_on_a_stream_is_raised_before_any_chunk() -> None:
    chunks = []
    with replay("relay/08-rpm-limit-429-stream"), pytest.raises(RateLimitError) as info:
        for c in relay("gpt-4o-limited").stream("Say hi"):
            chunks.append(c)
    assert chunks == []
    assert info.value.retryable
    assert info.value.code == "throttling_error"


@pytest.mark.parametrize(
    ("cassette", "model", "content"),
    [
        (
            "relay/06-claude-blocking",
            "claude-sonnet",
            "Hi, a mocked claude-sonnet reply from the LiteLLM proxy.",
        ),
        ("relay/15-x-api-key-header", "gpt-4o", ANSWER),
        (
            "relay_litellm/06-claude-blocking",
            "claude-sonnet",
            "Hello! This is a mocked claude-sonnet reply from the LiteLLM proxy.",
        ),
    ],
)
def test_success_transcripts(cassette: str, model: str, content: str) -> None:
    with replay(cassette):
        msg = relay(model).invoke("Say hi")
    assert msg.content == content
    assert msg.response_metadata["model_name"] == model
    assert msg.usage_metadata == {"input_tokens": 10, "output_tokens": 20, "total_tokens": 30}
    assert msg.id
    assert msg.id.startswith("chatcmpl-")


def test_stream_with_rate_limit_replayed_async() -> None:
    import asyncio

    async def consume() -> None:
        async for _ in relay("gpt-4o-limited", async_backend="httpx").astream("Say hi"):
            pass

    with replay("relay_litellm/10-rpm-limit-429-stream"), pytest.raises(RateLimitError):
        asyncio.run(consume())
