"""`BlackHole`: connects to it time out (never refused, never accepted) on every client."""

from __future__ import annotations

import asyncio
import socket
import time

import aiohttp
import httpx
import pytest

from dify_lc.testing import BlackHole


def test_a_raw_connect_times_out_and_the_port_refuses_once_closed() -> None:
    with BlackHole() as hole:
        assert hole.base_url == f"http://127.0.0.1:{hole.port}/v1"
        port = hole.port
        with socket.socket() as sock, pytest.raises(TimeoutError):
            sock.settimeout(0.2)
            sock.connect(("127.0.0.1", port))
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.connect(("127.0.0.1", port))  # every socket closed, the port is free again


def test_httpx_gets_a_connect_timeout() -> None:
    with BlackHole() as hole, httpx.Client(timeout=httpx.Timeout(5.0, connect=0.2)) as client:
        start = time.monotonic()
        with pytest.raises(httpx.ConnectTimeout):
            client.get(hole.base_url)
        assert time.monotonic() - start < 1.0


async def test_aiohttp_and_async_httpx_get_a_connect_timeout() -> None:
    with BlackHole() as hole:
        timeout = aiohttp.ClientTimeout(total=5.0, sock_connect=0.2)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            with pytest.raises(aiohttp.ConnectionTimeoutError):
                await session.get(hole.base_url)
        async with httpx.AsyncClient(timeout=httpx.Timeout(5.0, connect=0.2)) as client:
            with pytest.raises(httpx.ConnectTimeout):
                await client.get(hole.base_url)
        # Several at once all hang: the queue stays full.
        async with aiohttp.ClientSession(timeout=timeout) as session:
            results = await asyncio.gather(
                *(session.get(hole.base_url) for _ in range(5)), return_exceptions=True
            )
        assert all(isinstance(r, aiohttp.ConnectionTimeoutError) for r in results)


def test_lifecycle_errors() -> None:
    hole = BlackHole()
    with pytest.raises(RuntimeError, match="not started"):
        _ = hole.port
    hole.start()
    try:
        with pytest.raises(RuntimeError, match="already started"):
            hole.start()
    finally:
        hole.close()
    hole.close()  # idempotent
    with pytest.raises(ValueError, match="loopback"):
        BlackHole("0.0.0.0")
