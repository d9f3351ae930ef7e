"""Fake Dify and OpenAI-compatible relay servers for tests and benchmarks.

Both are real HTTP servers on a loopback port, each on its own event loop in a daemon thread,
so sync code, async code on any loop and other processes can call them. Their bytes follow
the recordings of a real Dify 0.15.3 and a real LiteLLM 1.106 proxy (see PROTOCOL.md), and
`Fault` injects the failures a resilient client must survive::

    from dify_lc.testing import FakeDify, FakeRelay, Fault

    with FakeDify(api_key="app-test", chunk_size=3, mode="chat") as dify:
        dify.base_url            # "http://127.0.0.1:<port>/v1"
        dify.enqueue(Fault.rate_limited(), Fault(inband_error_after=2))
        dify.set_default(Fault(first_token_delay=0.5))
        ...
        dify.requests            # [RecordedRequest(method, path, ..., received_at)]
        dify.stops               # [(path, task_id, user)]

    async with FakeRelay(api_key="sk-test", model="gpt-4o") as relay:
        ...

`BlackHole()` is an address whose TCP connect never completes (connect timeouts, Linux).

`python -m dify_lc.testing dify|relay --port 0` serves one from the command line and prints
`READY <base_url>` once it accepts connections.
"""

from ._blackhole import BlackHole
from ._chaos import Chaos, LogNormal
from ._dify import DEFAULT_ANSWER, DifyMode, FakeDify
from ._endpoint import Target, endpoint_or_fake
from ._faults import Fault, FaultKind, RetryAfterHeader
from ._relay import FakeRelay, example_from_schema
from ._server import FakeServer, RecordedRequest

__all__ = [
    "DEFAULT_ANSWER",
    "BlackHole",
    "Chaos",
    "DifyMode",
    "FakeDify",
    "FakeRelay",
    "FakeServer",
    "Fault",
    "FaultKind",
    "LogNormal",
    "RecordedRequest",
    "RetryAfterHeader",
    "Target",
    "endpoint_or_fake",
    "example_from_schema",
]
