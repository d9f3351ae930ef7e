"""ChatDify, DifyWorkflow and DifyClient against the loopback fake Dify (real HTTP, no waits)."""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import RawTestServer
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from dify_lc import ChatDify, DifyWorkflow
from dify_lc.errors import (
    APIConnectionError,
    APITimeoutError,
    ConfigurationError,
    DifyLCError,
    InBandStreamError,
    InputError,
    ProtocolError,
    RateLimitError,
    ServerError,
    StreamInterruptedError,
    WorkflowRunFailedError,
)
from dify_lc.testing import DEFAULT_ANSWER, BlackHole, FakeDify, Fault

KEY = "app-live-test-key-0123456789"


@pytest.fixture
def server() -> Iterator[FakeDify]:
    with FakeDify(api_key=KEY, seed=1) as srv:
        yield srv


def model(srv: FakeDify, **kw: object) -> ChatDify:
    m = ChatDify(api_key=KEY, base_url=srv.base_url, user="u1", **kw)
    m._driver.sleep = lambda s: None  # policy tests never wait for real

    async def no_wait(s: float) -> None:
        return None

    m._driver.asleep = no_wait
    return m


def generate_requests(srv: FakeDify) -> list[object]:
    return [r for r in srv.requests if r.path.endswith(("/chat-messages", "/completion-messages"))]


async def wait_for(cond, limit: float = 3.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + limit
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


# --------------------------------------------------------------------------- happy paths


def test_invoke_stream_batch_in_a_chain(server: FakeDify) -> None:
    m = model(server)
    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | m | StrOutputParser()
    assert chain.invoke({"q": "hi"}) == DEFAULT_ANSWER
    assert "".join(chain.stream({"q": "hi"})) == DEFAULT_ANSWER
    assert chain.batch([{"q": "a"}, {"q": "b"}]) == [DEFAULT_ANSWER, DEFAULT_ANSWER]


async def test_async_invoke_stream_batch(server: FakeDify) -> None:
    m = model(server)
    msg = await m.ainvoke("hi")
    assert msg.content == DEFAULT_ANSWER
    assert msg.usage_metadata is not None
    assert msg.usage_metadata["total_tokens"] > 0
    text = "".join([c.content async for c in m.astream("hi")])
    assert text == DEFAULT_ANSWER
    results = await m.abatch(["a", "b", "c"])
    assert [r.content for r in results] == [DEFAULT_ANSWER] * 3


def test_blocking_mode(server: FakeDify) -> None:
    msg = model(server, response_mode="blocking").invoke("hi")
    assert msg.content == DEFAULT_ANSWER
    assert generate_requests(server)[0].json["response_mode"] == "blocking"


def test_tokens_arrive_as_the_server_sends_them(server: FakeDify) -> None:
    server.set_default(Fault(chunk_delay=0.05))
    m = model(server)
    start = time.perf_counter()
    stream = m.stream("hi")
    first = next(stream)
    first_at = time.perf_counter() - start
    rest = list(stream)
    total = time.perf_counter() - start
    assert first.content
    assert first_at < total / 3  # the first token came long before the body ended
    assert len(rest) > 5


def test_conversation_continues_with_the_returned_id(server: FakeDify) -> None:
    m = model(server)
    first = m.invoke("My name is Ada")
    conv = first.response_metadata["conversation_id"]
    assert conv
    second = m.invoke(
        [HumanMessage("My name is Ada"), AIMessage(first.content), HumanMessage("Who am I?")],
        config={"configurable": {"conversation_id": conv}},
    )
    assert second.response_metadata["conversation_id"] == conv
    sent = generate_requests(server)[1].json
    assert sent["query"] == "Who am I?"
    assert sent["conversation_id"] == conv


def test_usage_is_counted_once_when_streaming(server: FakeDify) -> None:
    chunks = list(model(server).stream("hi"))
    assert sum(1 for c in chunks if c.usage_metadata) == 1


def test_agent_chat_invoke_aggregates_the_stream() -> None:
    with FakeDify(api_key=KEY, mode="agent-chat") as srv:
        assert model(srv).invoke("hi").content == DEFAULT_ANSWER
        with pytest.raises(Exception, match="does not support blocking"):
            model(srv, response_mode="blocking").invoke("hi")


def test_one_pooled_client_is_reused(server: FakeDify) -> None:
    m = model(server)
    m.invoke("a")
    client = m._endpoint._client
    m.invoke("b")
    list(m.stream("c"))
    assert m._endpoint._client is client
    assert client is not None


async def test_one_async_client_per_loop_is_reused(server: FakeDify) -> None:
    m = model(server)
    await m.ainvoke("a")
    client = m._endpoint._async_client()
    await m.ainvoke("b")
    assert m._endpoint._async_client() is client


async def test_async_requests_go_through_aiohttp_by_default(server: FakeDify) -> None:
    import aiohttp
    import httpx

    fast = model(server)
    await fast.ainvoke("hi")
    assert isinstance(fast._endpoint._async_client(), aiohttp.ClientSession)
    plain = model(server, async_backend="httpx")
    assert (await plain.ainvoke("hi")).content == DEFAULT_ANSWER
    assert isinstance(plain._endpoint._async_client(), httpx.AsyncClient)


def test_model_works_across_event_loops(server: FakeDify) -> None:
    m = model(server)
    for _ in range(2):  # each asyncio.run is a new loop: a client bound to the old one would fail
        assert asyncio.run(m.ainvoke("hi")).content == DEFAULT_ANSWER


# --------------------------------------------------------------------------- early stop


def test_consumer_stopping_early_stops_the_task(server: FakeDify) -> None:
    server.set_default(Fault(chunk_delay=0.05))
    m = model(server)
    for _chunk in m.stream("hi"):
        break
    assert len(server.stops) == 1
    path, task_id, user = server.stops[0]
    assert path.endswith(f"/chat-messages/{task_id}/stop")
    assert user == "u1"


async def test_async_consumer_stopping_early_stops_the_task(server: FakeDify) -> None:
    server.set_default(Fault(chunk_delay=0.05))
    stream = model(server).astream("hi")
    async for _chunk in stream:
        break
    await stream.aclose()
    await wait_for(lambda: len(server.stops) == 1)


async def test_cancelled_task_stops_the_stream(server: FakeDify) -> None:
    server.set_default(Fault(chunk_delay=0.05))
    m = model(server)
    got_first = asyncio.Event()

    async def consume() -> None:
        async for _chunk in m.astream("hi"):
            got_first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_first.wait(), 3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_for(lambda: len(server.stops) == 1)


def test_finished_stream_is_not_stopped(server: FakeDify) -> None:
    list(model(server).stream("hi"))
    assert server.stops == []


# --------------------------------------------------------------------------- failures


def test_rate_limit_is_retried_then_succeeds(server: FakeDify) -> None:
    server.enqueue(Fault.dify_concurrency_limit(), Fault.rate_limited())
    assert model(server).invoke("hi").content == DEFAULT_ANSWER
    assert len(generate_requests(server)) == 3


def test_retries_are_bounded_by_max_retries(server: FakeDify) -> None:
    server.set_default(Fault.server_error(503))
    with pytest.raises(Exception) as info:
        model(server, max_retries=1).invoke("hi")
    assert info.value.status == 503  # type: ignore[attr-defined]
    assert len(generate_requests(server)) == 2


def test_inband_error_before_first_token_is_retried(server: FakeDify) -> None:
    server.enqueue(Fault(inband_error_after=0))
    chunks = list(model(server).stream("hi"))
    assert "".join(c.content for c in chunks) == DEFAULT_ANSWER
    assert len(generate_requests(server)) == 2


def test_inband_error_after_first_token_raises_with_partial_text(server: FakeDify) -> None:
    server.enqueue(Fault(inband_error_after=3))
    got = []
    with pytest.raises(StreamInterruptedError) as info:
        for c in model(server).stream("hi"):
            got.append(c.content)
    assert info.value.partial_text == "".join(got)
    assert info.value.partial_text
    assert isinstance(info.value.__cause__, InBandStreamError)
    assert len(generate_requests(server)) == 1  # never retried: no duplicated text


def test_truncated_stream_raises_instead_of_returning_a_short_answer(server: FakeDify) -> None:
    server.enqueue(Fault(truncate_after=2))
    with pytest.raises(StreamInterruptedError) as info:
        model(server).invoke("hi")
    assert info.value.partial_text
    assert len(generate_requests(server)) == 1


def test_connection_reset_mid_stream(server: FakeDify) -> None:
    server.enqueue(Fault(reset_after=2))
    with pytest.raises(StreamInterruptedError) as info:
        list(model(server).stream("hi"))
    assert isinstance(info.value.__cause__, APIConnectionError)


async def test_connection_reset_mid_stream_async(server: FakeDify) -> None:
    server.enqueue(Fault(reset_after=2))
    with pytest.raises(StreamInterruptedError):
        [c async for c in model(server).astream("hi")]


def test_read_timeout_is_not_retried_on_dify_by_default(server: FakeDify) -> None:
    server.set_default(Fault(hang=True))
    with pytest.raises(APITimeoutError) as info:
        model(server, read_timeout=0.2).invoke("hi")
    assert not info.value.retryable
    assert len(generate_requests(server)) == 1


def test_read_timeout_retry_is_opt_in(server: FakeDify) -> None:
    server.enqueue(Fault(hang=True))
    msg = model(server, read_timeout=0.2, retry_on_read_timeout=True).invoke("hi")
    assert msg.content == DEFAULT_ANSWER
    assert len(generate_requests(server)) == 2


@pytest.mark.parametrize("mode", ["streaming", "blocking"])
def test_total_timeout_bounds_the_call(server: FakeDify, mode: str) -> None:
    server.set_default(Fault(pings=50, first_token_delay=5.0))  # pings keep the socket busy
    start = time.monotonic()
    with pytest.raises(APITimeoutError):
        model(server, timeout=0.5, response_mode=mode).invoke("hi")
    assert time.monotonic() - start < 1.5


async def test_total_timeout_bounds_the_async_call(server: FakeDify) -> None:
    server.set_default(Fault(hang=True))
    start = time.monotonic()
    with pytest.raises(APITimeoutError):
        await model(server, timeout=0.3, response_mode="blocking").ainvoke("hi")
    assert time.monotonic() - start < 1.0


def test_connect_refused_is_a_retryable_connection_error() -> None:
    m = ChatDify(api_key=KEY, base_url="http://127.0.0.1:9/v1", max_retries=0)
    with pytest.raises(APIConnectionError) as info:
        m.invoke("hi")
    assert info.value.retryable
    assert not info.value.request_sent


async def test_connect_refused_async() -> None:
    m = ChatDify(api_key=KEY, base_url="http://127.0.0.1:9/v1", max_retries=0)
    with pytest.raises(APIConnectionError) as info:
        await m.ainvoke("hi")
    assert info.value.retryable


@pytest.mark.parametrize("async_backend", ["aiohttp", "httpx"])
def test_connect_timeout_is_a_retryable_timeout_that_sent_nothing(async_backend: str) -> None:
    with BlackHole() as hole:
        m = ChatDify(
            api_key=KEY,
            base_url=hole.base_url,
            connect_timeout=0.2,
            max_retries=0,
            async_backend=async_backend,
        )
        for call in (lambda: m.invoke("hi"), lambda: asyncio.run(m.ainvoke("hi"))):
            start = time.monotonic()
            with pytest.raises(APITimeoutError, match="connect timeout") as info:
                call()
            assert time.monotonic() - start < 1.0  # the connect timeout, not a SYN retransmit
            assert info.value.retryable
            assert not info.value.request_sent


def test_html_gateway_page(server: FakeDify) -> None:
    server.set_default(Fault.html(504))
    with pytest.raises(Exception, match="504 Gateway Time-out") as info:
        model(server, max_retries=0).invoke("hi")
    assert info.value.retryable  # type: ignore[attr-defined]


def test_rate_limit_error_carries_retry_after(server: FakeDify) -> None:
    server.set_default(Fault.rate_limited("3"))
    with pytest.raises(RateLimitError) as info:
        model(server, max_retries=0).invoke("hi")
    assert info.value.retry_after == 3.0


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("messages", "fragment"),
    [
        ([], "no messages"),
        ([SystemMessage("sys")], "last message must be a human"),
        ([HumanMessage("hi"), AIMessage("hello")], "last message must be a human"),
        ([HumanMessage("   ")], "no text"),
    ],
)
def test_bad_input_fails_before_any_request(
    server: FakeDify, messages: list[object], fragment: str
) -> None:
    m = model(server)
    with pytest.raises(InputError, match=fragment):
        m.invoke(messages)
    with pytest.raises(InputError, match=fragment):
        list(m.stream(messages))
    assert server.requests == []


async def test_bad_input_fails_before_any_request_async(server: FakeDify) -> None:
    with pytest.raises(InputError):
        await model(server).ainvoke([])
    assert server.requests == []


def test_missing_key_names_the_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DIFY_API_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="DIFY_API_KEY"):
        ChatDify()


def test_plain_http_to_a_remote_host_warns() -> None:
    with pytest.warns(UserWarning, match="plain http"):
        ChatDify(api_key=KEY, base_url="http://dify.example.com/v1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ChatDify(api_key=KEY, base_url="http://127.0.0.1:5001/v1")
        ChatDify(api_key=KEY, base_url="https://api.dify.ai/v1")


def test_key_is_not_in_repr_or_errors(server: FakeDify) -> None:
    m = model(server)
    assert KEY not in repr(m)
    assert KEY not in str(m)
    server.set_default(Fault(status=401))
    with pytest.raises(Exception) as info:
        m.invoke("hi")
    assert KEY not in str(info.value)
    assert KEY not in repr(info.value)


# --------------------------------------------------------------------------- workflows


def workflow(srv: FakeDify, **kw: object) -> DifyWorkflow:
    return DifyWorkflow(api_key=KEY, base_url=srv.base_url, user="u1", **kw)


def test_workflow_invoke_and_stream(server: FakeDify) -> None:
    wf = workflow(server)
    assert wf.invoke({"topic": "x"}) == {"text": DEFAULT_ANSWER}
    items = list(wf.stream({"topic": "x"}))
    events = [i["event"] for i in items]
    assert "node_started" in events
    assert events[-1] == "workflow_finished"
    assert items[-1]["outputs"] == {"text": DEFAULT_ANSWER}
    assert "".join(i["text"] for i in items if i["event"] == "text_chunk") == DEFAULT_ANSWER
    assert workflow(server, response_mode="blocking").invoke({"topic": "x"}) == {
        "text": DEFAULT_ANSWER
    }


async def test_workflow_async(server: FakeDify) -> None:
    wf = workflow(server)
    assert await wf.ainvoke({"topic": "x"}) == {"text": DEFAULT_ANSWER}
    items = [i async for i in wf.astream({"topic": "x"})]
    assert items[-1]["event"] == "workflow_finished"


def test_workflow_failed_run_raises(server: FakeDify) -> None:
    server.set_default(Fault(workflow_failed=True))
    with pytest.raises((WorkflowRunFailedError, StreamInterruptedError)) as info:
        workflow(server).invoke({"topic": "x"})
    err = info.value
    cause = err if isinstance(err, WorkflowRunFailedError) else err.__cause__
    assert isinstance(cause, WorkflowRunFailedError)
    assert "boom" in str(cause)


def test_workflow_early_stop_uses_the_workflow_stop_endpoint(server: FakeDify) -> None:
    server.set_default(Fault(chunk_delay=0.05))
    for item in workflow(server).stream({"topic": "x"}):
        if item["event"] == "text_chunk":
            break
    assert len(server.stops) == 1
    assert "/workflows/tasks/" in server.stops[0][0]


def test_workflow_in_a_chain(server: FakeDify) -> None:
    chain = workflow(server) | (lambda out: out["text"].upper())
    assert chain.invoke({"topic": "x"}) == DEFAULT_ANSWER.upper()


def test_workflow_rejects_non_dict_input(server: FakeDify) -> None:
    with pytest.raises(InputError):
        workflow(server).invoke("not a dict")  # type: ignore[arg-type]
    assert server.requests == []


def test_stream_answered_with_json_is_a_protocol_error() -> None:
    import httpx

    from dify_lc.errors import ProtocolError

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"answer": "not a stream"})

    client = httpx.Client(transport=httpx.MockTransport(handler))
    m = ChatDify(api_key=KEY, base_url="http://127.0.0.1:1/v1", http_client=client, max_retries=0)
    with pytest.raises(ProtocolError, match="event stream"):
        m.invoke("hi")
    assert not client.is_closed  # a client the user brought is theirs to close


def test_stream_with_pings_before_the_first_token(server: FakeDify) -> None:
    server.enqueue(Fault(pings=3, first_token_delay=0.06))
    chunks = list(model(server).stream("hi"))
    assert "".join(c.content for c in chunks) == DEFAULT_ANSWER
    assert len(generate_requests(server)) == 1


@pytest.mark.filterwarnings("ignore:base_url")
def test_proxy_from_the_environment_is_used(
    server: FakeDify, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fake server doubles as an HTTP proxy: it serves absolute-form request targets.
    proxy = server.base_url.removesuffix("/v1")
    for var in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy)
    m = ChatDify(api_key=KEY, base_url="http://dify.invalid/v1", user="u1", max_retries=0)
    assert m.invoke("hi").content == DEFAULT_ANSWER
    assert asyncio.run(m.ainvoke("hi")).content == DEFAULT_ANSWER
    hosts = [r.headers.get("host") for r in generate_requests(server)]
    assert hosts == ["dify.invalid", "dify.invalid"]


def test_environment_proxy_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    from dify_lc.transport import _env_proxy_for

    for var in (
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ):
        monkeypatch.delenv(var, raising=False)
    assert _env_proxy_for("https://api.dify.ai/v1") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.local:3128")
    assert _env_proxy_for("https://api.dify.ai/v1") == "http://proxy.local:3128"
    assert _env_proxy_for("http://dify.internal/v1") is None  # no HTTP_PROXY
    monkeypatch.setenv("NO_PROXY", "api.dify.ai,localhost")
    assert _env_proxy_for("https://api.dify.ai/v1") is None


async def test_async_path_uses_the_environment_proxy(
    server: FakeDify, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HTTP_PROXY", server.base_url.removesuffix("/v1"))
    with pytest.warns(UserWarning, match="plain http"):
        m = ChatDify(api_key=KEY, base_url="http://dify.invalid/v1", max_retries=0)
    chunks = [c.content async for c in m.astream("hi")]
    assert "".join(chunks) == DEFAULT_ANSWER
    assert generate_requests(server)[0].headers.get("host") == "dify.invalid"


# --------------------------------------------------------------------------- size caps

CAP = 64 * 1024


def capped(m: ChatDify) -> ChatDify:
    m._endpoint.max_event_bytes = m._endpoint.max_body_bytes = CAP
    return m


@pytest.mark.parametrize("async_backend", ["aiohttp", "httpx"])
@pytest.mark.parametrize("mode", ["streaming", "blocking"])
def test_an_answer_over_the_cap_is_a_protocol_error(
    server: FakeDify, mode: str, async_backend: str
) -> None:
    server.set_default(Fault(oversized=4 * CAP))
    m = capped(model(server, response_mode=mode, async_backend=async_backend))
    for call in (lambda: m.invoke("hi"), lambda: asyncio.run(m.ainvoke("hi"))):
        with pytest.raises(ProtocolError, match=r"exceeds max_(event|body)_bytes") as info:
            call()
        assert info.value.allows_fallback
        assert not info.value.retryable  # as a read timeout: Dify may have billed it
    assert len(generate_requests(server)) == 2
    # The same 256 KiB answer is well under the default caps (4 MiB an event, 32 MiB a body).
    assert model(server, response_mode=mode).invoke("hi").content == DEFAULT_ANSWER


@pytest.mark.parametrize("async_backend", ["aiohttp", "httpx"])
@pytest.mark.parametrize("mode", ["streaming", "blocking"])
def test_invalid_utf8_is_a_protocol_error(server: FakeDify, mode: str, async_backend: str) -> None:
    server.set_default(Fault(invalid_utf8=True))
    m = model(server, response_mode=mode, async_backend=async_backend)
    for call in (lambda: m.invoke("hi"), lambda: asyncio.run(m.ainvoke("hi"))):
        with pytest.raises(ProtocolError, match="not valid UTF-8"):
            call()
    assert len(generate_requests(server)) == 2


# (status, content type, first bytes) of a body that goes on with 1 KiB chunks of "x"
BIG_BODIES = {
    "stream": (200, "text/event-stream", b"data: "),
    "blocking": (200, "application/json", b'{"answer": "'),
    "error": (500, "application/json", b'{"message": "'),
}
TOTAL = 4 * 2**20  # what the server would send in all


def _check_capped(kind: str, exc: BaseException) -> None:
    """A body over the cap fails as it must; an error body is truncated to 64 KiB instead."""
    if kind == "error":
        assert isinstance(exc, ServerError)
        assert exc.response is not None
        assert len(exc.response.content) == 64 * 1024
    else:
        assert isinstance(exc, ProtocolError)
        assert "exceeds max_event_bytes" in str(exc) or "exceeds max_body_bytes" in str(exc)


@pytest.mark.parametrize("kind", list(BIG_BODIES))
def test_sync_reads_stop_at_the_cap(kind: str) -> None:
    status, content_type, first = BIG_BODIES[kind]
    pulled: list[int] = []

    def body() -> Iterator[bytes]:
        yield first
        for _ in range(TOTAL // 1024):
            pulled.append(1)
            yield b"x" * 1024

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers={"content-type": content_type}, content=body())

    client = httpx.Client(transport=httpx.MockTransport(handler))
    mode = "streaming" if kind == "stream" else "blocking"
    m = capped(
        ChatDify(
            api_key=KEY,
            base_url="http://127.0.0.1:1/v1",
            http_client=client,
            max_retries=0,
            response_mode=mode,
        )
    )
    with pytest.raises(DifyLCError) as info:
        m.invoke("hi")
    _check_capped(kind, info.value)
    assert len(pulled) <= CAP // 1024 + 1  # stopped at the cap, nothing buffered past it
    client.close()


@pytest.mark.parametrize("kind", list(BIG_BODIES))
async def test_async_httpx_reads_stop_at_the_cap(kind: str) -> None:
    status, content_type, first = BIG_BODIES[kind]
    pulled: list[int] = []

    async def body() -> AsyncIterator[bytes]:
        yield first
        for _ in range(TOTAL // 1024):
            pulled.append(1)
            yield b"x" * 1024

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers={"content-type": content_type}, content=body())

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    mode = "streaming" if kind == "stream" else "blocking"
    m = capped(
        ChatDify(
            api_key=KEY,
            base_url="http://127.0.0.1:1/v1",
            http_async_client=client,
            max_retries=0,
            response_mode=mode,
        )
    )
    with pytest.raises(DifyLCError) as info:
        await m.ainvoke("hi")
    _check_capped(kind, info.value)
    assert len(pulled) <= CAP // 1024 + 1
    await client.aclose()


@pytest.mark.parametrize("kind", list(BIG_BODIES))
async def test_aiohttp_reads_stop_at_the_cap(kind: str) -> None:
    status, content_type, first = BIG_BODIES[kind]
    written: list[int] = []
    total = 64 * 2**20  # far more than loopback socket buffers hold

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        # Chunked: no Content-Length to reject up front, the cap has to count.
        resp = web.StreamResponse(status=status, headers={"content-type": content_type})
        await resp.prepare(request)
        await resp.write(first)
        chunk = b"x" * 16384
        try:
            for _ in range(total // len(chunk)):
                await resp.write(chunk)
                written.append(len(chunk))
        except ConnectionError:
            pass  # the client hung up at its cap
        return resp

    async with RawTestServer(handler) as srv:
        mode = "streaming" if kind == "stream" else "blocking"
        m = capped(
            ChatDify(
                api_key=KEY, base_url=str(srv.make_url("/v1")), max_retries=0, response_mode=mode
            )
        )
        assert isinstance(m._endpoint._async_client(), aiohttp.ClientSession)
        with pytest.raises(DifyLCError) as info:
            await m.ainvoke("hi")
        _check_capped(kind, info.value)
        await m.aclose()
    assert sum(written) < total // 4  # the client closed the connection instead of reading on


def test_a_declared_length_over_the_cap_is_rejected_before_reading() -> None:
    pulled: list[int] = []

    def body() -> Iterator[bytes]:
        pulled.append(1)
        yield b"{}"

    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"content-type": "application/json", "content-length": str(CAP + 1)}
        return httpx.Response(200, headers=headers, content=body())

    client = httpx.Client(transport=httpx.MockTransport(handler))
    m = ChatDify(
        api_key=KEY,
        base_url="http://127.0.0.1:1/v1",
        http_client=client,
        max_retries=0,
        response_mode="blocking",
    )
    m._endpoint.max_body_bytes = CAP
    with pytest.raises(ProtocolError, match="max_body_bytes") as info:
        m.invoke("hi")
    assert info.value.status == 200
    assert not pulled
    client.close()


def test_caps_default_to_32_mib_a_body_and_4_mib_an_event(server: FakeDify) -> None:
    endpoint: Any = model(server)._endpoint
    assert (endpoint.max_body_bytes, endpoint.max_event_bytes) == (32 * 2**20, 4 * 2**20)
    endpoint = model(server, max_body_bytes=1000, max_event_bytes=100)._endpoint
    assert (endpoint.max_body_bytes, endpoint.max_event_bytes) == (1000, 100)
    with pytest.raises(ConfigurationError, match="max_event_bytes"):
        model(server, max_event_bytes=0)
