"""The fake Dify and relay servers speak the recorded bytes and inject every fault."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from dify_lc.testing import DEFAULT_ANSWER, FakeDify, FakeRelay, Fault, example_from_schema

DIFY_KEY = "app-test"
RELAY_KEY = "sk-test"
ROOT = Path(__file__).resolve().parents[2]
_PEER_DIRS = [ROOT.parent / "shared" / "peers", Path("/work/shared/peers")]
PEERS = next((p for p in _PEER_DIRS if p.is_dir()), None)
needs_peers = pytest.mark.skipif(PEERS is None, reason="shared/peers recordings not found")

# Verbatim from peers/dify and peers/litellm, so these checks run even without the recordings.
E01_BODY = b'{"code": "unauthorized", "message": "Access token is invalid", "status": 401}\n'
E02_BODY = (
    b'{"code": "unauthorized", "message": "Authorization header must be provided and start '
    b'with \'Bearer\'", "status": 401}\n'
)
RELAY_05_BODY = (
    b'{"error":{"message":"Authentication Error, No api key passed in.","type":"auth_error",'
    b'"param":"None","code":"401"}}'
)
S01_KEYS = [
    "event", "task_id", "id", "message_id", "conversation_id", "mode", "answer", "metadata",
    "created_at",
]  # fmt: skip
STREAM_KEYS = [
    "event", "conversation_id", "message_id", "created_at", "task_id", "id", "answer",
    "from_variable_selector",
]  # fmt: skip
USAGE_KEYS = [
    "prompt_tokens", "prompt_unit_price", "prompt_price_unit", "prompt_price",
    "completion_tokens", "completion_unit_price", "completion_price_unit", "completion_price",
    "total_tokens", "total_price", "currency", "latency",
]  # fmt: skip


# -- helpers ----------------------------------------------------------------------------------


@dataclass
class Transcript:
    method: str
    path: str
    request_headers: dict[str, str]
    request_body: bytes
    status: int
    headers: dict[str, str]
    body: bytes


def _headers(block: bytes) -> dict[str, str]:
    out = {}
    for line in block.decode().splitlines():
        name, _, value = line.partition(":")
        out[name.strip().lower()] = value.strip()
    return out


def load(name: str) -> Transcript:
    assert PEERS is not None
    raw = (PEERS / name).read_bytes()
    request, response = raw.split(b"<<< RESPONSE\n", 1)
    request = request.split(b">>> REQUEST\n", 1)[1]
    req_head, _, req_body = request.partition(b"\n\n")
    req_line, _, req_headers_block = req_head.partition(b"\n")
    req_headers = _headers(req_headers_block)
    req_body = req_body[: int(req_headers.get("content-length", "0"))]
    head, _, body = response.partition(b"\n\n")
    status_line, _, headers_block = head.partition(b"\n")
    headers = _headers(headers_block)
    # The recorder appends one newline after each body.
    body = body[: int(headers["content-length"])] if "content-length" in headers else body[:-1]
    method, path, _ = req_line.decode().split(" ", 2)
    return Transcript(
        method, path, req_headers, req_body, int(status_line.split()[1]), headers, body
    )


_UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def normalize(body: bytes) -> bytes:
    """Blank out what legitimately differs between runs: ids, clocks and token counts."""
    body = _UUID.sub(b"<uuid>", body)
    body = re.sub(rb'("created(?:_at)?": ?)\d+', rb"\1<ts>", body)
    body = re.sub(rb'("(?:latency|cost)": ?)[0-9.e-]+', rb"\1<f>", body)
    return re.sub(rb'("(?:prompt|completion|total|text)_tokens": ?)\d+', rb"\1<n>", body)


def events(body: bytes) -> list[dict[str, Any]]:
    return [json.loads(f[6:]) for f in body.split(b"\n\n") if f.startswith(b"data: {")]


def dify_client(dify: FakeDify, **kwargs: Any) -> httpx.Client:
    auth = {"Authorization": f"Bearer {DIFY_KEY}"}
    return httpx.Client(base_url=dify.base_url, headers=auth, **kwargs)


def relay_client(relay: FakeRelay, **kwargs: Any) -> httpx.Client:
    auth = {"Authorization": f"Bearer {RELAY_KEY}"}
    return httpx.Client(base_url=relay.base_url, headers=auth, **kwargs)


def chat(query: str = "Hello there", mode: str = "blocking", **extra: Any) -> dict[str, Any]:
    return {"inputs": {}, "query": query, "response_mode": mode, "user": "u1", **extra}


SAY_HI = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Say hi"}]}


@pytest.fixture(scope="module")
def dify() -> Any:
    with FakeDify(api_key=DIFY_KEY) as server:
        yield server


@pytest.fixture(scope="module")
def relay() -> Any:
    with FakeRelay(api_key=RELAY_KEY) as server:
        yield server


@pytest.fixture(autouse=True)
def _clean(request: pytest.FixtureRequest) -> None:
    for name in ("dify", "relay"):
        if name in request.fixturenames:
            server = request.getfixturevalue(name)
            server.reset()
            server.set_default(None)


# -- Dify: bytes versus the recordings --------------------------------------------------------


def test_blocking_chat_body_is_json_dumps_style_without_newline(dify: FakeDify) -> None:
    with dify_client(dify) as client:
        response = client.post("/chat-messages", json=chat())
    body = response.content
    obj = json.loads(body)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-version"] == "0.15.3"
    assert response.headers["x-env"] == "PRODUCTION"
    assert "retry-after" not in response.headers
    assert json.dumps(obj).encode() == body  # ", " / ": " separators, no trailing newline
    assert list(obj) == S01_KEYS
    assert list(obj["metadata"]["usage"]) == USAGE_KEYS
    assert obj["answer"] == DEFAULT_ANSWER
    assert obj["id"] == obj["message_id"]
    assert obj["metadata"]["usage"]["completion_tokens"] == 20
    assert obj["metadata"]["usage"]["prompt_price"] == "0E-7"
    assert isinstance(obj["metadata"]["usage"]["latency"], float)


@needs_peers
def test_blocking_chat_matches_s01_modulo_ids(dify: FakeDify) -> None:
    peer = load("dify/s01-chat-blocking.txt")
    with dify_client(dify) as client:
        response = client.post("/chat-messages", content=peer.request_body)
    assert response.status_code == peer.status
    assert normalize(response.content) == normalize(peer.body)
    for name in ("content-type", "access-control-allow-origin", "x-version", "x-env"):
        assert response.headers[name] == peer.headers[name]


@needs_peers
def test_streaming_chat_matches_s02_frame_for_frame(dify: FakeDify) -> None:
    peer = load("dify/s02-chat-streaming.txt")
    with dify_client(dify) as client:
        response = client.post("/chat-messages", content=peer.request_body)
    assert response.headers["content-type"] == peer.headers["content-type"]
    assert response.headers["transfer-encoding"] == "chunked"
    assert normalize(response.content) == normalize(peer.body)


def test_streaming_chat_frames(dify: FakeDify) -> None:
    with dify_client(dify) as client:
        body = client.post("/chat-messages", json=chat(mode="streaming")).content
    frames = body.split(b"\n\n")
    assert frames[-1] == b""  # the body ends right after the last frame; no [DONE]
    assert all(f.startswith(b"data: {") for f in frames[:-1])
    got = events(body)
    assert [e["event"] for e in got] == ["message"] * 21 + ["message_end"]
    assert list(got[0]) == STREAM_KEYS
    assert got[0]["answer"] == "Hel"
    assert got[-2]["answer"] == ""
    assert "".join(e["answer"] for e in got[:-1]) == DEFAULT_ANSWER
    end = got[-1]
    assert end["files"] is None
    assert end["metadata"]["usage"]["completion_tokens"] == 20
    for frame in frames[:-1]:
        assert json.dumps(json.loads(frame[6:])).encode() == frame[6:]


REPLAYED = [
    "e01-bad-key-401.txt",
    "e02-no-auth-header-401.txt",
    "e03-missing-user-400.txt",
    "e04-missing-inputs-400.txt",
    "e05-bad-response-mode-400.txt",
    "e06-unknown-conversation-404.txt",
    "e07-unknown-conversation-streaming-404.txt",
    "e08-empty-query-400.txt",
    "e09-invalid-json-400.txt",
    "e11-input-too-long-400.txt",
    "x01-parameters.txt",
    "x02-meta.txt",
    "x03-info.txt",
    "x08-suggested-disabled.txt",
    "x09-stop-unknown-task.txt",
    "x10-stop-missing-user.txt",
    "x11-messages-missing-conversation.txt",
    "x12-messages-unknown-conversation.txt",
    "x13-wrong-method.txt",
    "x14-unknown-route.txt",
]


@needs_peers
@pytest.mark.parametrize("name", REPLAYED)
def test_replayed_dify_exchange_is_byte_identical(dify: FakeDify, name: str) -> None:
    peer = load(f"dify/{name}")
    headers = {k: v for k, v in peer.request_headers.items() if k in ("content-type",)}
    if "authorization" in peer.request_headers:
        # e01 keeps the redacted (wrong) key; the others use the fake's key.
        key = "app-REDACTED" if name.startswith("e01") else DIFY_KEY
        headers["authorization"] = f"Bearer {key}"
    with httpx.Client() as client:
        response = client.request(
            peer.method, dify.url + peer.path, content=peer.request_body, headers=headers
        )
    assert response.status_code == peer.status
    assert response.content == peer.body
    assert response.headers["content-type"] == peer.headers["content-type"]
    for name_ in ("access-control-allow-origin", "allow", "x-version", "x-env"):
        assert response.headers.get(name_) == peer.headers.get(name_)


def test_auth_errors_are_the_recorded_bytes(dify: FakeDify) -> None:
    with httpx.Client(base_url=dify.base_url) as client:
        wrong = client.post("/chat-messages", json=chat(), headers={"Authorization": "Bearer x"})
        missing = client.post("/chat-messages", json=chat())
    assert (wrong.status_code, wrong.content) == (401, E01_BODY)
    assert (missing.status_code, missing.content) == (401, E02_BODY)
    assert wrong.reason_phrase == "UNAUTHORIZED"


# -- Dify: state ------------------------------------------------------------------------------


def test_conversation_lifecycle(dify: FakeDify) -> None:
    with dify_client(dify) as client:
        first = client.post("/chat-messages", json=chat("first")).json()
        cid = first["conversation_id"]
        second = client.post("/chat-messages", json=chat("second", conversation_id=cid)).json()
        streamed = events(
            client.post(
                "/chat-messages", json=chat("third", "streaming", conversation_id=cid)
            ).content
        )
        assert second["conversation_id"] == cid
        assert {e["conversation_id"] for e in streamed} == {cid}

        other = client.post(
            "/chat-messages", json={**chat(conversation_id=cid), "user": "someone-else"}
        )
        assert other.status_code == 404
        assert other.content == (
            b'{"code": "not_found", "message": "Conversation Not Exists.", "status": 404}\n'
        )

        history = client.get("/messages", params={"conversation_id": cid, "user": "u1"})
        assert history.content.endswith(b"}\n")
        page = history.json()
        assert [m["query"] for m in page["data"]] == ["first", "second", "third"]
        assert list(page) == ["limit", "has_more", "data"]
        assert list(page["data"][0]) == [
            "id", "conversation_id", "parent_message_id", "inputs", "query", "answer",
            "message_files", "feedback", "retriever_resources", "created_at", "agent_thoughts",
            "status", "error",
        ]  # fmt: skip
        assert page["data"][0]["inputs"] == {"name": None}
        limited = client.get("/messages", params={"conversation_id": cid, "user": "u1", "limit": 2})
        assert [m["query"] for m in limited.json()["data"]] == ["second", "third"]
        assert limited.json()["has_more"] is True

        feedback = client.post(
            f"/messages/{first['message_id']}/feedbacks", json={"rating": "like", "user": "u1"}
        )
        assert feedback.content == b'{"result": "success"}\n'
        history = client.get("/messages", params={"conversation_id": cid, "user": "u1"}).json()
        assert history["data"][0]["feedback"] == {"rating": "like"}

        listed = client.get("/conversations", params={"user": "u1"}).json()
        assert cid in [c["id"] for c in listed["data"]]
        assert list(listed["data"][0]) == [
            "id", "name", "inputs", "status", "introduction", "created_at", "updated_at",
        ]  # fmt: skip

        renamed = client.post(f"/conversations/{cid}/name", json={"name": "R", "user": "u1"})
        assert renamed.json()["name"] == "R"

        deleted = client.request("DELETE", f"/conversations/{cid}", json={"user": "u1"})
        again = client.request("DELETE", f"/conversations/{cid}", json={"user": "u1"})
    assert (deleted.status_code, deleted.content) == (200, b'{"result": "success"}\n')
    assert again.status_code == 404
    assert json.loads(again.content)["code"] == "not_found"


def test_agent_chat_streams_agent_messages_and_rejects_blocking() -> None:
    with FakeDify(api_key=DIFY_KEY, mode="agent-chat") as dify, dify_client(dify) as client:
        blocking = client.post("/chat-messages", json=chat())
        stream = events(client.post("/chat-messages", json=chat(mode="streaming")).content)
    assert blocking.status_code == 400
    assert blocking.content == (
        b'{"code": "invalid_param", "message": "Agent Chat App does not support blocking mode",'
        b' "status": 400}\n'
    )
    kinds = [e["event"] for e in stream]
    assert kinds[0] == "agent_thought"
    assert kinds[-1] == "message_end"
    assert set(kinds[1:-1]) == {"agent_message"}
    assert "".join(e["answer"] for e in stream[1:-1]) == DEFAULT_ANSWER


def test_advanced_chat_wraps_messages_in_workflow_events() -> None:
    with FakeDify(api_key=DIFY_KEY, mode="advanced-chat") as dify, dify_client(dify) as client:
        stream = events(client.post("/chat-messages", json=chat(mode="streaming")).content)
        blocking = client.post("/chat-messages", json=chat()).json()
    kinds = [e["event"] for e in stream]
    assert kinds[0] == "workflow_started"
    assert kinds[-2:] == ["workflow_finished", "message_end"]
    assert kinds.index("node_started") < kinds.index("message")
    messages = [e for e in stream if e["event"] == "message"]
    assert messages[0]["from_variable_selector"] == ["llm", "text"]
    assert "".join(e["answer"] for e in messages) == DEFAULT_ANSWER
    assert stream[-2]["data"]["status"] == "succeeded"
    assert stream[-1]["files"] == []
    assert blocking["mode"] == "advanced-chat"


def test_completion_messages_have_no_conversation(dify: FakeDify) -> None:
    payload = {"inputs": {}, "response_mode": "blocking", "user": "u1"}
    with dify_client(dify) as client:
        blocking = client.post("/completion-messages", json=payload).json()
        stream = events(
            client.post(
                "/completion-messages", json={**payload, "response_mode": "streaming"}
            ).content
        )
    assert "conversation_id" not in blocking
    assert blocking["mode"] == "completion"
    assert list(stream[0])[:4] == ["event", "message_id", "created_at", "task_id"]
    assert stream[-1]["event"] == "message_end"


def test_workflow_run_blocking_streaming_and_failed(dify: FakeDify) -> None:
    payload = {"inputs": {"name": "Ada"}, "response_mode": "blocking", "user": "u1"}
    with dify_client(dify) as client:
        blocking = client.post("/workflows/run", json=payload)
        stream = events(
            client.post("/workflows/run", json={**payload, "response_mode": "streaming"}).content
        )
        dify.enqueue(Fault(workflow_failed=True), Fault(workflow_failed=True))
        failed = client.post("/workflows/run", json=payload).json()
        failed_stream = events(
            client.post("/workflows/run", json={**payload, "response_mode": "streaming"}).content
        )
    assert not blocking.content.endswith(b"\n")
    body = blocking.json()
    assert list(body) == ["task_id", "workflow_run_id", "data"]
    assert body["data"]["status"] == "succeeded"
    assert body["data"]["outputs"] == {"text": DEFAULT_ANSWER}
    kinds = [e["event"] for e in stream]
    assert kinds[:3] == ["workflow_started", "node_started", "node_finished"]
    assert kinds[-1] == "workflow_finished"
    assert "message_end" not in kinds
    chunks = [e["data"]["text"] for e in stream if e["event"] == "text_chunk"]
    assert "".join(chunks) == DEFAULT_ANSWER
    assert list(stream[0])[:4] == ["event", "workflow_run_id", "task_id", "data"]
    assert stream[-1]["data"]["outputs"] == {"text": DEFAULT_ANSWER}
    assert (failed["data"]["status"], failed["data"]["error"]) == ("failed", "boom")
    assert failed_stream[-1]["event"] == "workflow_finished"
    assert failed_stream[-1]["data"]["status"] == "failed"
    assert "error" not in [e["event"] for e in failed_stream]


def test_requests_are_recorded_without_credentials(dify: FakeDify) -> None:
    with dify_client(dify) as client:
        client.post("/chat-messages", json=chat(), params={"trace_id": "t1"})
    (recorded,) = dify.requests
    assert (recorded.method, recorded.path) == ("POST", "/v1/chat-messages")
    assert recorded.query == {"trace_id": "t1"}
    assert recorded.json == chat()
    assert "authorization" not in recorded.headers
    dify.reset()
    assert dify.requests == []


def test_seeded_ids_are_reproducible() -> None:
    ids = []
    for _ in range(2):
        with FakeDify(seed=7) as dify, dify_client(dify) as client:
            ids.append(client.post("/chat-messages", json=chat()).json()["task_id"])
    assert ids[0] == ids[1]


# -- Dify: stop -------------------------------------------------------------------------------


def _stream_then_stop(dify: FakeDify, stop_user: str) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    with dify_client(dify) as client:
        with client.stream("POST", "/chat-messages", json=chat(mode="streaming")) as response:
            lines = response.iter_lines()
            for line in lines:
                if line.startswith("data: "):
                    got.append(json.loads(line[6:]))
                    break
            stop = client.post(f"/chat-messages/{got[0]['task_id']}/stop", json={"user": stop_user})
            assert stop.content == b'{"result": "success"}\n'
            got += [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
    return got


def test_stop_ends_a_delayed_stream_with_message_end() -> None:
    with FakeDify(api_key=DIFY_KEY, chunk_delay=0.05) as dify:
        got = _stream_then_stop(dify, "u1")
        assert dify.stops == [
            (f"/v1/chat-messages/{got[0]['task_id']}/stop", got[0]["task_id"], "u1")
        ]
    assert got[-1]["event"] == "message_end"
    assert got[-2]["event"] == "message"
    assert got[-2]["answer"] != ""  # no trailing answer:"" event after a stop
    delivered = len(got) - 1
    assert delivered < 20
    assert got[-1]["metadata"]["usage"]["completion_tokens"] == delivered


def test_stop_from_another_user_is_accepted_and_ignored() -> None:
    with FakeDify(api_key=DIFY_KEY, chunk_delay=0.005) as dify:
        got = _stream_then_stop(dify, "intruder")
        assert dify.stops[0][2] == "intruder"
    assert "".join(e.get("answer", "") for e in got) == DEFAULT_ANSWER


@pytest.mark.parametrize(
    ("mode", "path", "stop_path"),
    [
        ("advanced-chat", "/chat-messages", "/chat-messages/{}/stop"),
        ("chat", "/workflows/run", "/workflows/tasks/{}/stop"),
        ("chat", "/completion-messages", "/completion-messages/{}/stop"),
    ],
)
def test_stop_in_other_modes(mode: str, path: str, stop_path: str) -> None:
    got: list[dict[str, Any]] = []
    with FakeDify(api_key=DIFY_KEY, mode=mode, chunk_delay=0.05) as dify, dify_client(dify) as c:
        with c.stream("POST", path, json=chat(mode="streaming")) as response:
            lines = response.iter_lines()
            for line in lines:
                if line.startswith("data: "):
                    got.append(json.loads(line[6:]))
                if got and got[-1]["event"] in ("message", "text_chunk"):
                    break
            c.post(stop_path.format(got[0]["task_id"]), json={"user": "u1"})
            got += [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
    kinds = [e["event"] for e in got]
    if path == "/workflows/run":
        assert kinds[-1] == "workflow_finished"
        assert got[-1]["data"]["status"] == "stopped"
    elif mode == "advanced-chat":
        assert kinds[-2:] == ["workflow_finished", "message_end"]
        assert got[-2]["data"]["status"] == "stopped"
    else:
        assert kinds[-1] == "message_end"
    assert len(got) < 15


# -- Dify: faults -----------------------------------------------------------------------------


def test_pings_before_the_first_token(dify: FakeDify) -> None:
    dify.enqueue(Fault(pings=2, first_token_delay=0.03))
    with dify_client(dify) as client:
        body = client.post("/chat-messages", json=chat(mode="streaming")).content
    assert body.startswith(b"event: ping\n\nevent: ping\n\ndata: {")


def test_periodic_pings_while_waiting() -> None:
    with FakeDify(first_token_delay=0.25, ping_interval=0.1) as dify, dify_client(dify) as c:
        body = c.post("/chat-messages", json=chat(mode="streaming")).content
    assert body.count(b"event: ping\n\n") == 2
    assert body.startswith(b"event: ping\n\n")


def test_timing_faults(dify: FakeDify) -> None:
    dify.enqueue(Fault(delay=0.15), Fault(first_token_delay=0.1, chunk_delay=0.005))
    with dify_client(dify) as client:
        start = time.perf_counter()
        client.post("/chat-messages", json=chat())
        delayed = time.perf_counter() - start
        start = time.perf_counter()
        client.post("/chat-messages", json=chat(mode="streaming"))
        streamed = time.perf_counter() - start
    assert delayed >= 0.15
    assert streamed >= 0.1 + 19 * 0.005


@pytest.mark.parametrize(
    ("fault", "status", "body"),
    [
        (
            Fault.rate_limited(),
            429,
            b'{"code": "too_many_requests", "message": "Too many requests.", "status": 429}\n',
        ),
        (
            Fault.dify_concurrency_limit(),
            400,
            b'{"code": "invalid_param", "message": "Too many requests. Please try again later. '
            b'The current maximum concurrent requests allowed is 1.", "status": 400}\n',
        ),
        (
            Fault.server_error(502),
            502,
            b'{"message": "Internal Server Error", "code": "unknown"}\n',
        ),
        (Fault(status=403), 403, None),
        (Fault(status=400, body=b"nope"), 400, b"nope"),
    ],
)
def test_dify_http_error_faults(
    dify: FakeDify, fault: Fault, status: int, body: bytes | None
) -> None:
    dify.enqueue(fault)
    with dify_client(dify) as client:
        response = client.post("/chat-messages", json=chat(mode="streaming"))
    assert response.status_code == status
    if body is not None:
        assert response.content == body
    assert "retry-after" not in response.headers
    assert response.headers["x-version"] == "0.15.3"


def test_rate_limited_with_a_hint_and_html(dify: FakeDify) -> None:
    dify.enqueue(Fault.rate_limited("2"), Fault.html(504))
    with dify_client(dify) as client:
        limited = client.post("/chat-messages", json=chat())
        html = client.post("/chat-messages", json=chat())
    assert limited.headers["retry-after"] == "2"
    assert html.status_code == 504
    assert html.headers["content-type"] == "text/html"
    assert b"504 Gateway Time-out" in html.content


def test_faults_are_fifo_then_default(dify: FakeDify) -> None:
    dify.enqueue(Fault(status=500), Fault(status=503))
    dify.set_default(Fault(status=429))
    with dify_client(dify) as client:
        codes = [client.post("/chat-messages", json=chat()).status_code for _ in range(3)]
        assert client.get("/parameters").status_code == 200  # faults hit generate calls only
        dify.set_default(None)
        codes.append(client.post("/chat-messages", json=chat()).status_code)
    assert codes == [500, 503, 429, 200]


def test_inband_error_after_two_messages(dify: FakeDify) -> None:
    dify.enqueue(
        Fault(inband_error_after=2), Fault(inband_error_after=0), Fault(inband_error_after=1)
    )
    with dify_client(dify) as client:
        two = events(client.post("/chat-messages", json=chat(mode="streaming")).content)
        only = client.post("/chat-messages", json=chat(mode="streaming"))
        blocking = client.post("/chat-messages", json=chat())
    assert [e["event"] for e in two] == ["message", "message", "error"]
    error = two[-1]
    assert list(error) == [
        "event", "conversation_id", "message_id", "created_at", "code", "status", "message",
    ]  # fmt: skip
    assert error["code"] == "completion_request_error"
    assert error["message"].startswith("[openai_api_compatible] Error: API request failed")
    assert only.status_code == 200
    assert [e["event"] for e in events(only.content)] == ["error"]
    assert blocking.status_code == 400
    assert blocking.json()["code"] == "completion_request_error"


def test_truncate_after_ends_cleanly_without_terminal_event(dify: FakeDify) -> None:
    dify.enqueue(Fault(truncate_after=3))
    with dify_client(dify) as client:
        got = events(client.post("/chat-messages", json=chat(mode="streaming")).content)
    assert [e["event"] for e in got] == ["message"] * 3


def test_reset_after_aborts_the_connection(dify: FakeDify) -> None:
    dify.enqueue(Fault(reset_after=3), Fault(reset_after=0), Fault(reset_after=1))
    seen: list[str] = []
    with dify_client(dify) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            with client.stream("POST", "/chat-messages", json=chat(mode="streaming")) as r:
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        seen.append(line)
        with pytest.raises(httpx.RemoteProtocolError):
            client.post("/chat-messages", json=chat(mode="streaming"))
        with pytest.raises(httpx.RemoteProtocolError):
            client.post("/chat-messages", json=chat())
        assert client.post("/chat-messages", json=chat()).status_code == 200
    assert len(seen) == 3


def test_invalid_json_fault(dify: FakeDify) -> None:
    dify.enqueue(Fault(invalid_json=True), Fault(invalid_json=True))
    with dify_client(dify) as client:
        blocking = client.post("/chat-messages", json=chat())
        stream = client.post("/chat-messages", json=chat(mode="streaming")).content
    assert blocking.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(blocking.content)
    first = stream.split(b"\n\n")[0]
    assert first.startswith(b"data: {")
    with pytest.raises(json.JSONDecodeError):
        json.loads(first[6:])


def _first_frame(stream: bytes) -> bytes:
    """The first `data:` event of a stream body, blank line included."""
    end = stream.index(b"\n\n") + 2
    assert stream.startswith(b"data: ")
    return stream[:end]


def _spoiled(payload: bytes) -> dict[str, Any]:
    """A payload with the invalid-UTF-8 fault: not UTF-8, yet JSON once the bytes are replaced."""
    assert b'"invalid": "\xff\xfe"' in payload
    with pytest.raises(UnicodeDecodeError):
        payload.decode()
    obj: dict[str, Any] = json.loads(payload.decode("utf-8", "replace"))
    return obj


def test_invalid_utf8_fault(dify: FakeDify) -> None:
    dify.enqueue(Fault(invalid_utf8=True), Fault(invalid_utf8=True))
    with dify_client(dify) as client:
        blocking = client.post("/chat-messages", json=chat())
        stream = client.post("/chat-messages", json=chat(mode="streaming")).content
    assert blocking.status_code == 200
    assert int(blocking.headers["content-length"]) == len(blocking.content)
    assert _spoiled(blocking.content)["answer"] == DEFAULT_ANSWER
    first = _first_frame(stream)
    assert _spoiled(first[6:])["event"] == "message"
    rest = events(stream[len(first) :])  # the rest of the stream is intact
    assert rest[-1]["event"] == "message_end"


def test_oversized_fault(dify: FakeDify) -> None:
    size = 100_000
    dify.enqueue(Fault(oversized=size), Fault(oversized=size))
    with dify_client(dify) as client:
        blocking = client.post("/chat-messages", json=chat()).content
        stream = client.post("/chat-messages", json=chat(mode="streaming")).content
    assert len(blocking) == size
    assert json.loads(blocking)["answer"] == DEFAULT_ANSWER  # valid JSON, just large
    first = _first_frame(stream)
    assert len(first) == size  # the whole event, `data: ` and the blank line included
    assert first.count(b"\n") == 2  # one line
    got = events(stream)
    assert got[0]["padding"] == "x" * len(got[0]["padding"])
    assert "".join(e.get("answer", "") for e in got) == DEFAULT_ANSWER


def test_hang_times_out_the_client_and_does_not_block_shutdown() -> None:
    dify = FakeDify(api_key=DIFY_KEY).start()
    errors: list[BaseException] = []

    def parked_call() -> None:
        with dify_client(dify, timeout=5) as client:
            try:
                client.post("/chat-messages", json=chat())
            except httpx.HTTPError as exc:
                errors.append(exc)

    try:
        dify.enqueue(Fault(hang=True), Fault(hang=True))
        with dify_client(dify, timeout=0.2) as client, pytest.raises(httpx.ReadTimeout):
            client.post("/chat-messages", json=chat())
        # The second hang is still parked when the server stops.
        thread = threading.Thread(target=parked_call, daemon=True)
        thread.start()
        time.sleep(0.1)
        start = time.perf_counter()
        dify.stop()
        thread.join(5)
        assert time.perf_counter() - start < 2
        assert len(errors) == 1
    finally:
        dify.stop()


# -- relay ------------------------------------------------------------------------------------


@needs_peers
@pytest.mark.parametrize(
    "name", ["01-chat-blocking.txt", "02-chat-stream.txt", "03-chat-stream-include-usage.txt"]
)
def test_relay_success_matches_recordings(relay: FakeRelay, name: str) -> None:
    peer = load(f"litellm/{name}")
    with relay_client(relay) as client:
        response = client.post("/chat/completions", content=peer.request_body)
    assert response.status_code == 200
    assert response.headers["content-type"] == peer.headers["content-type"]
    assert normalize(response.content) == normalize(peer.body)


def test_relay_stream_shape(relay: FakeRelay) -> None:
    payload = {**SAY_HI, "stream": True, "stream_options": {"include_usage": True}}
    with relay_client(relay) as client:
        body = client.post("/chat/completions", json={**payload, "model": "claude-x"}).content
    frames = body.split(b"\n\n")
    assert frames[-2:] == [b"data: [DONE]", b""]
    chunks = [json.loads(f[6:]) for f in frames[:-2]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "Hel"}
    assert "finish_reason" not in chunks[1]["choices"][0]
    assert chunks[-2]["choices"] == [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    assert chunks[-1]["choices"] == [{"index": 0, "delta": {}}]
    assert chunks[-1]["usage"]["completion_tokens"] == 20
    assert chunks[-1]["usage"]["prompt_tokens"] == len("Say hi") // 4 + 1
    assert {c["model"] for c in chunks} == {"claude-x"}
    for frame in frames[:-2]:
        compact = json.dumps(json.loads(frame[6:]), separators=(",", ":"), ensure_ascii=False)
        assert compact.encode() == frame[6:]


@needs_peers
@pytest.mark.parametrize(
    ("name", "options", "fault"),
    [
        ("04-wrong-key.txt", {"bad_key_error": "no_db"}, None),
        ("05-no-key.txt", {}, None),
        ("07-rpm-limit-429.txt", {}, Fault.rate_limited("60", "llm_provider-retry-after")),
        ("08-rpm-limit-429-stream.txt", {}, None),
        ("09-upstream-429-mock.txt", {}, Fault.rate_limited()),
        ("10-unknown-model.txt", {"models": ["gpt-4o"]}, None),
        ("12-malformed-auth-header.txt", {}, None),
        ("13-bad-request-missing-messages.txt", {}, None),
        ("15-x-api-key-header.txt", {}, None),
    ],
)
def test_relay_errors_match_recordings(name: str, options: dict[str, Any], fault: Any) -> None:
    peer = load(f"litellm/{name}")
    headers = {"content-type": "application/json"}
    for header in ("authorization", "x-api-key"):
        if header in peer.request_headers:
            value = peer.request_headers[header]
            if not name.startswith("04"):
                value = value.replace("sk-REDACTED", RELAY_KEY)
            headers[header] = value
    with FakeRelay(api_key=RELAY_KEY, **options) as relay, httpx.Client() as client:
        if fault is not None:
            relay.enqueue(fault)
        response = client.post(relay.url + peer.path, content=peer.request_body, headers=headers)
        if name.startswith("08"):
            return  # covered by 07: same body apart from the usage counter
    assert response.status_code == peer.status
    if peer.status == 200:
        assert normalize(response.content) == normalize(peer.body)
        return
    assert response.content == peer.body
    for header in ("llm_provider-retry-after", "retry-after"):
        assert response.headers.get(header) == peer.headers.get(header)


def test_relay_auth_without_recordings(relay: FakeRelay) -> None:
    with httpx.Client(base_url=relay.base_url) as client:
        missing = client.post("/chat/completions", json=SAY_HI)
        wrong = client.post("/chat/completions", json=SAY_HI, headers={"x-api-key": "sk-bad"})
        ok = client.post("/chat/completions", json=SAY_HI, headers={"x-api-key": RELAY_KEY})
    assert (missing.status_code, missing.content) == (401, RELAY_05_BODY)
    assert wrong.status_code == 401
    assert wrong.json()["error"]["type"] == "auth_error"
    assert wrong.json()["error"]["code"] == "401"
    assert ok.status_code == 200
    assert not ok.content.endswith(b"\n")


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "scale": {"type": "number"},
                "metric": {"type": "boolean"},
            },
            "required": ["city"],
        },
    },
}
WEATHER_ARGS = {"city": "x", "days": 1, "scale": 1.5, "metric": True}


def test_relay_tool_call_blocking(relay: FakeRelay) -> None:
    messages = [{"role": "user", "content": "Use the tool please"}]
    with relay_client(relay) as client:
        body = client.post(
            "/chat/completions", json={**SAY_HI, "messages": messages, "tools": [WEATHER]}
        ).json()
        plain = client.post("/chat/completions", json={**SAY_HI, "tools": [WEATHER]}).json()
        answered = client.post(
            "/chat/completions",
            json={
                **SAY_HI,
                "tools": [WEATHER],
                "messages": [*messages, {"role": "tool", "content": "sunny", "tool_call_id": "1"}],
            },
        ).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_")
    assert call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == WEATHER_ARGS
    assert plain["choices"][0]["finish_reason"] == "stop"
    assert answered["choices"][0]["message"]["content"] == DEFAULT_ANSWER


def test_relay_tool_call_streaming(relay: FakeRelay) -> None:
    relay.enqueue(Fault(tool_call=True))
    with relay_client(relay) as client:
        body = client.post(
            "/chat/completions", json={**SAY_HI, "stream": True, "tools": [WEATHER]}
        ).content
    chunks = [json.loads(f[6:]) for f in body.split(b"\n\n") if f.startswith(b"data: {")]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    first = deltas[0]["tool_calls"][0]
    assert (first["function"]["name"], first["function"]["arguments"]) == ("get_weather", "")
    assert first["id"].startswith("call_")
    fragments = [d["tool_calls"][0]["function"]["arguments"] for d in deltas[1:-1]]
    assert len(fragments) >= 1
    assert json.loads("".join(fragments)) == WEATHER_ARGS
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_relay_json_response_format(relay: FakeRelay) -> None:
    schema = {
        "type": "object",
        "properties": {"title": {"type": "string"}, "tags": {"type": "array", "items": {}}},
    }
    response_format = {"type": "json_schema", "json_schema": {"name": "t", "schema": schema}}
    with relay_client(relay) as client:
        body = client.post(
            "/chat/completions", json={**SAY_HI, "response_format": response_format}
        ).json()
        loose = client.post(
            "/chat/completions", json={**SAY_HI, "response_format": {"type": "json_object"}}
        ).json()
    assert json.loads(body["choices"][0]["message"]["content"]) == {"title": "x", "tags": ["x"]}
    assert json.loads(loose["choices"][0]["message"]["content"]) == {"answer": DEFAULT_ANSWER}


def test_example_from_schema_follows_refs_and_enums() -> None:
    schema = {
        "type": "object",
        "properties": {
            "inner": {"$ref": "#/$defs/Inner"},
            "mode": {"enum": ["a", "b"]},
            "maybe": {"anyOf": [{"type": "null"}, {"type": "integer"}]},
        },
        "$defs": {"Inner": {"type": "object", "properties": {"n": {"type": "number"}}}},
    }
    assert example_from_schema(schema) == {"inner": {"n": 1.5}, "mode": "a", "maybe": 1}


def test_relay_stream_faults(relay: FakeRelay) -> None:
    stream = {**SAY_HI, "stream": True}
    relay.enqueue(Fault(inband_error_after=2), Fault(truncate_after=2), Fault.server_error())
    with relay_client(relay) as client:
        errored = client.post("/chat/completions", json=stream).content
        truncated = client.post("/chat/completions", json=stream).content
        failed = client.post("/chat/completions", json=stream)
    frames = errored.split(b"\n\n")
    assert len(frames) == 4
    assert json.loads(frames[2][6:])["error"]["type"] == "throttling_error"
    assert b"[DONE]" not in errored
    assert truncated.count(b"data: ") == 2
    assert b"[DONE]" not in truncated
    assert failed.status_code == 500
    assert failed.content == (
        b'{"error":{"message":"litellm.InternalServerError: Internal Server Error",'
        b'"type":"internal_server_error","param":null,"code":"500"}}'
    )


def test_relay_invalid_utf8_and_oversized_faults(relay: FakeRelay) -> None:
    stream = {**SAY_HI, "stream": True}
    size = 100_000
    relay.enqueue(
        Fault(invalid_utf8=True), Fault(invalid_utf8=True), Fault(oversized=size),
        Fault(oversized=size),
    )  # fmt: skip
    with relay_client(relay) as client:
        bad_blocking = client.post("/chat/completions", json=SAY_HI).content
        bad_stream = client.post("/chat/completions", json=stream).content
        big_blocking = client.post("/chat/completions", json=SAY_HI).content
        big_stream = client.post("/chat/completions", json=stream).content
    assert _spoiled(bad_blocking)["choices"][0]["message"]["content"] == DEFAULT_ANSWER
    first = _first_frame(bad_stream)
    assert _spoiled(first[6:])["choices"][0]["delta"]["role"] == "assistant"
    assert bad_stream.endswith(b"data: [DONE]\n\n")
    assert len(big_blocking) == size
    assert json.loads(big_blocking)["choices"][0]["message"]["content"] == DEFAULT_ANSWER
    first = _first_frame(big_stream)
    assert len(first) == size
    assert json.loads(first[6:])["choices"][0]["delta"]["role"] == "assistant"


def test_relay_pings_are_sse_comments(relay: FakeRelay) -> None:
    relay.enqueue(Fault(pings=1))
    with relay_client(relay) as client:
        body = client.post("/chat/completions", json={**SAY_HI, "stream": True}).content
    assert body.startswith(b": PING\n\ndata: {")


def test_relay_models(relay: FakeRelay) -> None:
    with relay_client(relay) as client:
        body = client.get("/models").json()
    assert body == {
        "data": [{"id": "gpt-4o", "object": "model", "created": 1677610602, "owned_by": "openai"}],
        "object": "list",
    }


# -- lifecycle --------------------------------------------------------------------------------


async def test_async_context_managers_run_two_servers_at_once() -> None:
    async with FakeDify(api_key=DIFY_KEY) as dify, FakeRelay(api_key=RELAY_KEY) as relay:
        assert dify.port != relay.port
        async with httpx.AsyncClient() as client:
            answer = await client.post(
                f"{dify.base_url}/chat-messages",
                json=chat(),
                headers={"Authorization": f"Bearer {DIFY_KEY}"},
            )
            completion = await client.post(
                f"{relay.base_url}/chat/completions",
                json=SAY_HI,
                headers={"Authorization": f"Bearer {RELAY_KEY}"},
            )
    assert answer.json()["answer"] == DEFAULT_ANSWER
    assert completion.json()["choices"][0]["message"]["content"] == DEFAULT_ANSWER


def test_two_dify_servers_are_independent() -> None:
    with FakeDify() as one, FakeDify() as two:
        assert one.base_url != two.base_url
        with dify_client(one) as client:
            cid = client.post("/chat-messages", json=chat()).json()["conversation_id"]
        with dify_client(two) as client:
            response = client.post("/chat-messages", json=chat(conversation_id=cid))
        assert response.status_code == 404


def test_only_loopback_hosts() -> None:
    with pytest.raises(ValueError, match="loopback"):
        FakeDify(host="0.0.0.0")


def test_cli_prints_ready_and_stops_on_sigterm() -> None:
    command = [sys.executable, "-m", "dify_lc.testing", "relay", "--api-key", "sk-cli"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert line.startswith("READY http://127.0.0.1:")
            base_url = line.split()[1]
            response = httpx.get(f"{base_url}/models", headers={"x-api-key": "sk-cli"})
            assert response.status_code == 200
            process.send_signal(signal.SIGTERM)
            assert process.wait(5) == 0
        finally:
            process.kill()
