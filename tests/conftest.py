"""Shared fixtures: cassette replay (no network) and loopback fake servers."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import vcr

CASSETTES = Path(__file__).resolve().parent.parent / "cassettes"
DIFY_URL = "http://127.0.0.1:5001/v1"
RELAY_URL = "http://127.0.0.1:4000/v1"


class Replay:
    """A vcrpy cassette in playback-only mode that also records what we sent."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def match(self, r1: Any, r2: Any) -> None:
        # A matcher that never rejects: it records the outgoing request (r1) for assertions.
        self.sent.append(r1)


@contextmanager
def replay(name: str) -> Iterator[Replay]:
    """Replay ``cassettes/<name>.yaml``; any request not in it fails (no network)."""
    rec = Replay()
    my_vcr = vcr.VCR(record_mode="none")
    my_vcr.register_matcher("capture", rec.match)
    with my_vcr.use_cassette(
        str(CASSETTES / f"{name}.yaml"), match_on=["method", "path", "capture"]
    ):
        yield rec


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any connection that is not to loopback."""
    real = socket.socket.connect

    def guarded(self: socket.socket, address: Any) -> Any:
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and not (host.startswith("127.") or host in ("::1", "localhost")):
            raise AssertionError(f"test tried to reach {address}")
        return real(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Any]:
    """A real redis-server on a free loopback port for the whole session."""
    from _redis import RedisServer

    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_url(redis_server: Any) -> str:
    """The server's URL, emptied (and running) before each test."""
    import redis

    if redis_server.proc is None:
        redis_server.start()
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    return str(redis_server.url)
