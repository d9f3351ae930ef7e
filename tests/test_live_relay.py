"""ChatRelay against the loopback fake relay: tools, structured output, retries, streams."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from pydantic import BaseModel

from dify_lc import ChatRelay
from dify_lc.errors import (
    APITimeoutError,
    InputError,
    RateLimitError,
    StreamInterruptedError,
)
from dify_lc.testing import DEFAULT_ANSWER, FakeRelay, Fault

KEY = "sk-live-test-key-0123456789"


class Weather(BaseModel):
    """Weather for a city."""

    city: str
    days: int


@pytest.fixture
def server() -> Iterator[FakeRelay]:
    with FakeRelay(api_key=KEY, model="gpt-4o", seed=1) as srv:
        yield srv


def relay(srv: FakeRelay, sleeps: list[float] | None = None, **kw: object) -> ChatRelay:
    m = ChatRelay(model="gpt-4o", api_key=KEY, base_url=srv.base_url, **kw)
    waits = sleeps if sleeps is not None else []
    m._driver.sleep = waits.append

    async def no_wait(s: float) -> None:
        waits.append(s)

    m._driver.asleep = no_wait
    return m


def completions(srv: FakeRelay) -> list[object]:
    return [r for r in srv.requests if r.path.endswith("/chat/completions")]


def test_invoke_and_stream(server: FakeRelay) -> None:
    m = relay(server)
    assert m.invoke("hi").content == DEFAULT_ANSWER
    chunks = list(m.stream("hi"))
    assert "".join(c.content for c in chunks) == DEFAULT_ANSWER
    assert sum(1 for c in chunks if c.usage_metadata) == 1


async def test_async(server: FakeRelay) -> None:
    m = relay(server)
    assert (await m.ainvoke("hi")).content == DEFAULT_ANSWER
    assert "".join([c.content async for c in m.astream("hi")]) == DEFAULT_ANSWER


def test_tool_call_blocking_and_streaming_agree(server: FakeRelay) -> None:
    bound = relay(server).bind_tools([Weather], tool_choice="Weather")
    msg = bound.invoke("use the tool please")
    assert msg.tool_calls[0]["name"] == "Weather"
    assert msg.tool_calls[0]["args"] == {"city": "x", "days": 1}
    body = completions(server)[0].json
    assert body["tool_choice"] == {"type": "function", "function": {"name": "Weather"}}
    total = None
    for chunk in bound.stream("use the tool please"):
        total = chunk if total is None else total + chunk
    assert total is not None
    assert total.tool_calls == [{**msg.tool_calls[0], "id": total.tool_calls[0]["id"]}]


def test_tool_result_round_trip(server: FakeRelay) -> None:
    history = [
        HumanMessage("weather in Paris? use the tool"),
        AIMessage(
            "",
            tool_calls=[{"name": "Weather", "args": {"city": "Paris", "days": 1}, "id": "call_1"}],
        ),
        ToolMessage("sunny", tool_call_id="call_1"),
    ]
    assert relay(server).invoke(history).content == DEFAULT_ANSWER
    sent = completions(server)[0].json["messages"]
    assert sent[1]["tool_calls"][0]["function"]["name"] == "Weather"
    assert json.loads(sent[1]["tool_calls"][0]["function"]["arguments"]) == {
        "city": "Paris",
        "days": 1,
    }
    assert sent[2] == {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}


@pytest.mark.parametrize("method", ["function_calling", "json_schema"])
def test_structured_output_with_a_schema(server: FakeRelay, method: str) -> None:
    result = relay(server).with_structured_output(Weather, method=method).invoke("weather")
    assert result == Weather(city="x", days=1)
    body = completions(server)[0].json
    if method == "json_schema":
        assert body["response_format"]["type"] == "json_schema"
        assert body["response_format"]["json_schema"]["name"] == "Weather"
    else:
        assert body["tools"][0]["function"]["name"] == "Weather"


def test_structured_output_json_mode(server: FakeRelay) -> None:
    result = relay(server).with_structured_output(None, method="json_mode").invoke("json please")
    assert result == {"answer": DEFAULT_ANSWER}  # the fake's JSON-mode answer
    assert completions(server)[0].json["response_format"] == {"type": "json_object"}


def test_structured_output_include_raw(server: FakeRelay) -> None:
    out = relay(server).with_structured_output(Weather, include_raw=True).invoke("weather")
    assert isinstance(out["raw"], AIMessage)
    assert out["parsed"] == Weather(city="x", days=1)
    assert out["parsing_error"] is None


def test_read_timeout_is_retried_on_a_relay(server: FakeRelay) -> None:
    server.enqueue(Fault(hang=True))
    assert relay(server, read_timeout=0.2).invoke("hi").content == DEFAULT_ANSWER
    assert len(completions(server)) == 2


def test_retry_after_is_honoured(server: FakeRelay) -> None:
    server.enqueue(Fault.rate_limited("1.5"), Fault.rate_limited("250", header="retry-after-ms"))
    sleeps: list[float] = []
    assert relay(server, sleeps).invoke("hi").content == DEFAULT_ANSWER
    assert sleeps == [1.5, 0.25]


def test_retry_after_longer_than_the_deadline_is_not_waited(server: FakeRelay) -> None:
    server.set_default(Fault.rate_limited("30"))
    sleeps: list[float] = []
    with pytest.raises(RateLimitError):
        relay(server, sleeps, timeout=5).invoke("hi")
    assert sleeps == []
    assert len(completions(server)) == 1


def test_backoff_without_hint_is_capped_exponential_with_jitter(server: FakeRelay) -> None:
    server.set_default(Fault.server_error(503))
    sleeps: list[float] = []
    m = relay(server, sleeps, max_retries=3)
    m._driver.rand = lambda: 1.0  # the top of each jitter window
    with pytest.raises(Exception, match="503"):
        m.invoke("hi")
    assert sleeps == [0.5, 1.0, 2.0]


def test_stream_interrupted_after_first_token_is_not_retried(server: FakeRelay) -> None:
    server.enqueue(Fault(inband_error_after=2))
    with pytest.raises(StreamInterruptedError) as info:
        list(relay(server).stream("hi"))
    assert info.value.partial_text
    assert len(completions(server)) == 1


def test_stream_error_before_first_token_is_retried(server: FakeRelay) -> None:
    server.enqueue(Fault(reset_after=0), Fault(inband_error_after=0))
    assert "".join(c.content for c in relay(server).stream("hi")) == DEFAULT_ANSWER
    assert len(completions(server)) == 3


def test_hang_with_total_timeout(server: FakeRelay) -> None:
    server.set_default(Fault(hang=True))
    with pytest.raises(APITimeoutError):
        relay(server, timeout=0.4, read_timeout=10).invoke("hi")


@pytest.mark.parametrize(
    "messages",
    [[], [AIMessage("x")], [HumanMessage("")]],
)
def test_bad_input_fails_fast(server: FakeRelay, messages: list[object]) -> None:
    with pytest.raises(InputError):
        relay(server).invoke(messages)
    assert server.requests == []


def test_per_call_model_override(server: FakeRelay) -> None:
    msg = relay(server).invoke("hi", model="gpt-4o-mini")
    assert completions(server)[0].json["model"] == "gpt-4o-mini"
    assert msg.response_metadata["model_name"] == "gpt-4o-mini"
