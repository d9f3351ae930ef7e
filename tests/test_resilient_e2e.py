"""End to end on loopback: the official channel hangs, the relay is healthy."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from dify_lc import BreakerPolicy, ChatDify, ChatRelay, ResilientChatModel
from dify_lc.testing import DEFAULT_ANSWER, FakeDify, FakeRelay, Fault

DIFY_KEY = "app-e2e-test-key-0123456789"
RELAY_KEY = "sk-e2e-test-key-0123456789"


@pytest.fixture
def servers() -> Iterator[tuple[FakeDify, FakeRelay]]:
    with (
        FakeDify(api_key=DIFY_KEY) as dify,
        FakeRelay(api_key=RELAY_KEY, answer="relay says hi") as relay,
    ):
        dify.set_default(Fault(hang=True))
        yield dify, relay


def build(dify: FakeDify, relay: FakeRelay, **kw: object) -> ResilientChatModel:
    official = ChatDify(
        api_key=DIFY_KEY, base_url=dify.base_url, read_timeout=0.2, backend="official"
    )
    backup = ChatRelay(model="gpt-4o", api_key=RELAY_KEY, base_url=relay.base_url, backend="relay")
    return ResilientChatModel(
        official, [backup], breaker=BreakerPolicy(fail_max=3, reset_timeout=60), deadline=5, **kw
    )


def generate(dify: FakeDify) -> int:
    return sum(1 for r in dify.requests if r.path.endswith("/chat-messages"))


def test_hung_primary_is_skipped_once_its_breaker_opens(
    servers: tuple[FakeDify, FakeRelay],
) -> None:
    dify, relay = servers
    model = build(dify, relay)
    answers, latencies = [], []
    for _ in range(20):
        start = time.perf_counter()
        answers.append(model.invoke("hi").content)
        latencies.append(time.perf_counter() - start)
    assert answers == ["relay says hi"] * 20
    assert generate(dify) == 3  # fail_max attempts, then never again
    assert model.route("official").breaker.state == "open"
    assert max(latencies[3:]) < 0.2  # no more waiting on the hung channel


async def test_async_and_streaming_fall_back(servers: tuple[FakeDify, FakeRelay]) -> None:
    dify, relay = servers
    model = build(dify, relay)
    results = await asyncio.gather(*[model.ainvoke("hi") for _ in range(10)])
    assert {r.content for r in results} == {"relay says hi"}
    text = "".join([c.content async for c in model.astream("hi")])
    assert text == "relay says hi"
    assert (
        generate(dify) == 3
    )  # cold start: at most fail_max calls wait on a backend never heard from
    before = generate(dify)
    await model.ainvoke("hi")
    assert generate(dify) == before


def test_dify_first_when_healthy_and_history_reaches_the_relay(
    servers: tuple[FakeDify, FakeRelay],
) -> None:
    dify, relay = servers
    dify.set_default(None)
    model = build(dify, relay)
    msg = model.invoke("hi")
    assert msg.content == DEFAULT_ANSWER
    assert msg.response_metadata["route"] == "official"
    dify.set_default(Fault.server_error(503))
    history = ["hello", "hi there", "what did I say?"]
    from langchain_core.messages import AIMessage, HumanMessage

    msgs = [HumanMessage(history[0]), AIMessage(history[1]), HumanMessage(history[2])]
    reply = model.invoke(msgs, conversation_id="c-1")
    assert reply.response_metadata["route"] == "relay"
    sent = [r.json for r in relay.requests if r.path.endswith("/chat/completions")][-1]
    assert [m["content"] for m in sent["messages"]] == history  # full history: context survives
    assert "conversation_id" not in sent


def test_tools_and_structured_output_across_routes() -> None:
    from pydantic import BaseModel

    from dify_lc.errors import InputError

    class Weather(BaseModel):
        """Weather for a city."""

        city: str

    with FakeRelay(api_key=RELAY_KEY) as a, FakeRelay(api_key=RELAY_KEY) as b:
        a.set_default(Fault(status=401))
        first = ChatRelay(model="gpt-4o", api_key=RELAY_KEY, base_url=a.base_url, backend="a")
        second = ChatRelay(model="gpt-4o", api_key=RELAY_KEY, base_url=b.base_url, backend="b")
        model = ResilientChatModel(first, [second])
        msg = model.bind_tools([Weather]).invoke("use the tool")
        assert msg.tool_calls[0]["name"] == "Weather"
        assert msg.response_metadata["route"] == "b"
        assert model.with_structured_output(Weather).invoke("weather") == Weather(city="x")
        with FakeDify(api_key=DIFY_KEY) as dify:
            mixed = ResilientChatModel(ChatDify(api_key=DIFY_KEY, base_url=dify.base_url), [second])
            with pytest.raises(InputError, match="does not support tool calling"):
                mixed.bind_tools([Weather])


def test_stopping_a_resilient_stream_early_stops_the_dify_task() -> None:
    with (
        FakeDify(api_key=DIFY_KEY, chunk_delay=0.05) as dify,
        FakeRelay(api_key=RELAY_KEY) as relay,
    ):
        model = build(dify, relay)
        for _chunk in model.stream("hi"):
            break
        assert len(dify.stops) == 1
        assert model.route("official").breaker.circuit.fail_counter == 0


async def test_cancelling_a_resilient_async_stream_stops_the_dify_task() -> None:
    async with (
        FakeDify(api_key=DIFY_KEY, chunk_delay=0.05) as dify,
        FakeRelay(api_key=RELAY_KEY) as relay,
    ):
        model = build(dify, relay)
        first = asyncio.Event()

        async def consume() -> None:
            async for _chunk in model.astream("hi"):
                first.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(first.wait(), 3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(100):
            if dify.stops:
                break
            await asyncio.sleep(0.02)
        assert len(dify.stops) == 1


def test_resilient_runnable_over_dify_workflows() -> None:
    from dify_lc import DifyWorkflow, ResilientRunnable

    with (
        FakeDify(api_key=DIFY_KEY) as broken,
        FakeDify(api_key=DIFY_KEY, answer="backup run") as healthy,
    ):
        broken.set_default(Fault.server_error(502))
        first = DifyWorkflow(api_key=DIFY_KEY, base_url=broken.base_url, backend="wf-main")
        second = DifyWorkflow(api_key=DIFY_KEY, base_url=healthy.base_url, backend="wf-backup")
        model = ResilientRunnable(
            first, [second], retry=__import__("dify_lc").RetryPolicy(max_retries=0)
        )
        assert model.invoke({"topic": "x"}) == {"text": "backup run"}
        assert asyncio.run(model.ainvoke({"topic": "x"})) == {"text": "backup run"}
        items = list(model.stream({"topic": "x"}))
        assert items[-1]["outputs"] == {"text": "backup run"}
        assert (
            "".join(i.get("text", "") for i in items if i["event"] == "text_chunk") == "backup run"
        )
        assert model.route("wf-main").breaker.circuit.fail_counter == 3
