"""The fault matrix: every fault kind × {invoke, ainvoke, stream, astream} × {single, resilient}.

Generated from one table. Each cell checks the exact outcome (the typed error, or the answer
and which backend gave it), how many requests each server saw, the breaker state after, that no
text was duplicated, and that the call ended within its deadline.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import pytest

from dify_lc import BreakerPolicy, ChatDify, ChatRelay, ResilientChatModel, RetryPolicy
from dify_lc.errors import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    DifyLCError,
    NotFoundError,
    ProtocolError,
    StreamInterruptedError,
)
from dify_lc.testing import DEFAULT_ANSWER, BlackHole, FakeDify, FakeRelay, Fault

DIFY_KEY = "app-matrix-test-key-0123456789"
RELAY_KEY = "sk-matrix-test-key-0123456789"
RELAY_ANSWER = "relay answer"
DEADLINE = 5.0
MODES = ("invoke", "ainvoke", "stream", "astream")
CONNECT_TIMEOUT = 0.25  # loopback connects take microseconds; the black hole takes this long
SIZE_CAP = 64 * 1024  # on one SSE event and on a blocking body (defaults: 4 MiB, 32 MiB)

DIFY = "dify"  # the answer came from Dify
RELAY = "relay"  # the answer came from the relay (fallback)


@dataclass(frozen=True)
class Row:
    """One fault: what it is, and what each setup must end with.

    ``single`` / ``resilient``: ``DIFY``, ``RELAY`` or an error class. ``dify_requests``: what
    the Dify server sees in each setup (``None``: the server is not reached at all).
    ``address``: where the Dify model connects: the fake server, a closed port (connect
    refused) or a black hole (connect timeout).
    """

    name: str
    fault: Fault | None
    single: Any
    resilient: Any
    dify_requests: tuple[int | None, int | None]
    address: Literal["server", "refused", "black hole"] = "server"


ROWS = [
    Row("connect refused", None, APIConnectionError, RELAY, (None, None), address="refused"),
    Row("connect timeout", None, APITimeoutError, RELAY, (None, None), address="black hole"),
    Row("read timeout before the first byte", Fault(hang=True), APITimeoutError, RELAY, (1, 1)),
    Row(
        "hang mid-stream",
        Fault(chunk_delay=3.0),
        StreamInterruptedError,
        StreamInterruptedError,
        (1, 1),
    ),
    Row(
        "reset mid-stream",
        Fault(reset_after=2),
        StreamInterruptedError,
        StreamInterruptedError,
        (1, 1),
    ),
    Row("reset before the response", Fault(reset_after=0), APIConnectionError, RELAY, (1, 1)),
    Row("401", Fault(status=401), AuthenticationError, RELAY, (1, 1)),
    Row("404", Fault(status=404), NotFoundError, NotFoundError, (1, 1)),
    Row("429 retry-after", Fault.rate_limited("0.01"), DIFY, DIFY, (2, 2)),
    Row(
        "429 retry-after HTTP-date",
        Fault.rate_limited(email.utils.formatdate(time.time() + 1, usegmt=True)),
        DIFY,
        DIFY,
        (2, 2),
    ),
    Row(
        "429 retry-after-ms", Fault.rate_limited("10", header="retry-after-ms"), DIFY, DIFY, (2, 2)
    ),
    Row(
        "429 llm_provider-retry-after",
        Fault.rate_limited("0.01", header="llm_provider-retry-after"),
        DIFY,
        DIFY,
        (2, 2),
    ),
    Row("429 without a hint", Fault.rate_limited(), DIFY, DIFY, (2, 2)),
    Row("500", Fault.server_error(500), DIFY, DIFY, (2, 2)),
    Row("503", Fault.server_error(503), DIFY, DIFY, (2, 2)),
    Row("504 HTML page", Fault.html(504), DIFY, DIFY, (2, 2)),
    Row("Dify 400 Too many requests", Fault.dify_concurrency_limit(), DIFY, DIFY, (2, 2)),
    Row("in-band error before the first token", Fault(inband_error_after=0), DIFY, DIFY, (2, 2)),
    Row(
        "in-band error after the first token",
        Fault(inband_error_after=2),
        StreamInterruptedError,
        StreamInterruptedError,
        (1, 1),
    ),
    Row(
        "truncated stream",
        Fault(truncate_after=2),
        StreamInterruptedError,
        StreamInterruptedError,
        (1, 1),
    ),
    Row("invalid JSON", Fault(invalid_json=True), ProtocolError, RELAY, (1, 1)),
    Row("invalid UTF-8", Fault(invalid_utf8=True), ProtocolError, RELAY, (1, 1)),
    Row("oversized event", Fault(oversized=4 * SIZE_CAP), ProtocolError, RELAY, (1, 1)),
]


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[FakeDify, FakeRelay]]:
    with (
        FakeDify(api_key=DIFY_KEY, seed=11) as dify,
        FakeRelay(api_key=RELAY_KEY, answer=RELAY_ANSWER, seed=12) as relay,
    ):
        yield dify, relay


@pytest.fixture(scope="module")
def black_hole() -> Iterator[BlackHole]:
    with BlackHole() as hole:
        yield hole


async def _no_wait(_: float) -> None:
    return None


def _dify_model(base_url: str, **kw: Any) -> ChatDify:
    model = ChatDify(
        api_key=DIFY_KEY,
        base_url=base_url,
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=0.3,
        timeout=DEADLINE,
        max_body_bytes=SIZE_CAP,
        max_event_bytes=SIZE_CAP,
        **kw,
    )
    model._driver.sleep = lambda _: None
    model._driver.asleep = _no_wait
    return model


async def _run(model: Any, mode: str, seen: list[str]) -> str:
    if mode == "invoke":
        return str(model.invoke("hi").content)
    if mode == "ainvoke":
        return str((await model.ainvoke("hi")).content)
    if mode == "stream":
        for chunk in model.stream("hi"):
            seen.append(str(chunk.content))
        return "".join(seen)
    async for chunk in model.astream("hi"):
        seen.append(str(chunk.content))
    return "".join(seen)


def _generate(server: FakeDify | FakeRelay) -> int:
    return sum(
        1 for r in server.requests if r.path.endswith(("/chat-messages", "/chat/completions"))
    )


@pytest.mark.parametrize("setup", ["single", "resilient"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_fault(
    row: Row, mode: str, setup: str, servers: tuple[FakeDify, FakeRelay], black_hole: BlackHole
) -> None:
    dify, relay = servers
    dify.reset()
    relay.reset()
    dify.set_default(None)
    if row.fault is not None:
        dify.enqueue(row.fault)
    dify_url = {
        "server": dify.base_url,
        "refused": "http://127.0.0.1:9/v1",
        "black hole": black_hole.base_url,
    }[row.address]
    model: Any
    if setup == "single":
        model = _dify_model(dify_url, max_retries=1)
        expected = row.single
    else:
        relay_model = ChatRelay(model="gpt-4o", api_key=RELAY_KEY, base_url=relay.base_url)
        model = ResilientChatModel(
            _dify_model(dify_url, backend="dify"),
            [relay_model],
            retry=RetryPolicy(max_retries=1),
            breaker=BreakerPolicy(fail_max=5),
            deadline=DEADLINE,
        )
        model.use_clock(time.monotonic, sleep=lambda _: None, asleep=_no_wait)
        expected = row.resilient
    seen: list[str] = []
    start = time.monotonic()
    if isinstance(expected, type):
        with pytest.raises(expected) as info:
            asyncio.run(_run(model, mode, seen))
        if isinstance(info.value, StreamInterruptedError):
            assert info.value.partial_text  # what the caller already had...
            if mode in ("stream", "astream"):
                assert info.value.partial_text == "".join(seen)  # ...exactly, and nothing more
        assert isinstance(info.value, DifyLCError)
    else:
        text = asyncio.run(_run(model, mode, seen))
        assert text == (DEFAULT_ANSWER if expected == DIFY else RELAY_ANSWER)  # no duplicated text
    assert time.monotonic() - start < DEADLINE
    want = row.dify_requests[0 if setup == "single" else 1]
    assert _generate(dify) == (want or 0)
    went_to_relay = setup == "resilient" and expected == RELAY
    assert _generate(relay) == (1 if went_to_relay else 0)
    if setup == "resilient":
        assert model.route("dify").breaker.state == "closed"  # one failure never opens it
