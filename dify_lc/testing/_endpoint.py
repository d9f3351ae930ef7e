"""Real endpoint when configured, fake server otherwise: what examples and smoke tests need."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal, NamedTuple

from ._dify import FakeDify
from ._relay import FakeRelay

__all__ = ["Target", "endpoint_or_fake"]


class Target(NamedTuple):
    """Where to send requests; ``server`` is the fake (to inject faults), ``None`` when real."""

    base_url: str
    api_key: str
    server: FakeDify | FakeRelay | None


_ENV = {
    "dify": ("DIFY_API_KEY", "DIFY_BASE_URL", "app-offline-example"),
    "workflow": ("DIFY_WORKFLOW_API_KEY", "DIFY_BASE_URL", "app-offline-workflow"),
    "relay": ("RELAY_API_KEY", "RELAY_BASE_URL", "sk-offline-example"),
}


@contextmanager
def endpoint_or_fake(
    kind: Literal["dify", "workflow", "relay"], **fake_options: Any
) -> Iterator[Target]:
    """Yield a :class:`Target`: the real endpoint when its environment variables are set
    (``DIFY_API_KEY``/``DIFY_BASE_URL``, ``DIFY_WORKFLOW_API_KEY``, ``RELAY_API_KEY``/
    ``RELAY_BASE_URL``), else a fake server on loopback that lives for the ``with`` block."""
    key_env, url_env, fake_key = _ENV[kind]
    key = os.environ.get(key_env)
    if key:
        default = "https://api.dify.ai/v1" if kind != "relay" else ""
        yield Target(os.environ.get(url_env, default), key, None)
        return
    server_cls = FakeRelay if kind == "relay" else FakeDify
    with server_cls(api_key=fake_key, **fake_options) as server:
        yield Target(server.base_url, fake_key, server)
