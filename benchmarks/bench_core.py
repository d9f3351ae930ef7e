"""Core overhead benchmark of dify-lc against loopback fake servers, in one run.

Compares ``ChatDify`` and ``ChatRelay`` with raw HTTP clients (the floor) and with
langchain-openai's ``ChatOpenAI`` (the usual alternative for a relay) on three measurements:

1. sequential ``invoke`` latency (median and p90, ms), ours ≤ 1.6× the matching raw httpx call;
2. async throughput at 64 calls in flight (calls/s), ours ≥ 10× ``ChatOpenAI``;
3. consuming a 200-chunk stream (median total ms), ours ≤ 3× the matching raw httpx stream.

The fake servers (``python -m dify_lc.testing dify|relay``) run as separate processes, so they
do not compete with the client for the GIL. Sequential cases run interleaved in small batches
and async cases in interleaved rounds, so that drift (CPU frequency, other load) hits every
case alike. Rows marked "reference" are not targets: they show floors and ceilings (LangChain's
own per-call cost, the best a LangChain model over aiohttp can do) to read the ratios against.

Usage::

    python benchmarks/bench_core.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import queue
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, ExitStack
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport
from httpx_sse import connect_sse
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from dify_lc import ChatDify, ChatRelay

# langchain-openai is imported only when a ChatOpenAI row runs: with openai it adds ~54k objects
# to the process, which every full garbage collection then walks (~58 → ~86 ms here), and
# bench_resilience.py, which imports this module, has no use for it.
HAVE_OPENAI = importlib.util.find_spec("langchain_openai") is not None

DIFY_KEY = "app-bench"
RELAY_KEY = "sk-bench"
MODEL = "gpt-4o"
USER = "bench"
PROMPT = "hi"
SHORT_ANSWER = "Hello! This is a mocked gpt-4o reply from the LiteLLM proxy."
CHUNK_SIZE = 3
STREAM_CHUNKS = 200
# 600 characters: exactly STREAM_CHUNKS pieces of CHUNK_SIZE.
LONG_ANSWER = ("The quick brown fox jumps over the lazy dog. " * 14)[: STREAM_CHUNKS * CHUNK_SIZE]

SEQ_TARGET = 1.6  # ours / raw httpx, median latency: at most
ASYNC_TARGET = 10.0  # ours / ChatOpenAI, calls per second: at least
STREAM_TARGET = 3.0  # ours / raw httpx, median stream time: at most

PACKAGES = ("dify-lc", "langchain-core", "httpx", "httpx-aiohttp", "aiohttp", "langchain-openai")

SyncCall = Callable[[], object]
AsyncCall = Callable[[], Awaitable[object]]
AsyncFactory = Callable[[AsyncExitStack], Awaitable[AsyncCall]]


@dataclass(frozen=True, slots=True)
class Config:
    """Iteration counts of one run."""

    seq_n: int = 300
    seq_warmup: int = 30
    async_n: int = 2000
    async_warmup: int = 256
    async_rounds: int = 3  # each async case is measured this many times (median reported)
    concurrency: int = 64
    stream_n: int = 50
    stream_warmup: int = 10
    batch: int = 10  # calls per case per round (sequential measurements)


FULL = Config()
QUICK = Config(
    seq_n=40,
    seq_warmup=10,
    async_n=256,
    async_warmup=64,
    async_rounds=1,
    stream_n=10,
    stream_warmup=3,
    batch=5,
)


@dataclass(frozen=True, slots=True)
class Servers:
    """Base URLs (``http://127.0.0.1:<port>/v1``) of the two fake servers."""

    dify: str
    relay: str


# --------------------------------------------------------------------------- fake servers


def launch(stack: ExitStack, kind: str, api_key: str, answer: str) -> subprocess.Popen[str]:
    """Start ``python -m dify_lc.testing <kind>`` in a child process, stopped by `stack`."""
    cmd = [
        sys.executable,
        "-m",
        "dify_lc.testing",
        kind,
        "--port",
        "0",
        "--api-key",
        api_key,
        "--answer",
        answer,
        "--chunk-size",
        str(CHUNK_SIZE),
        "--chunk-delay",
        "0",
        "--first-token-delay",
        "0",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    stack.callback(_stop, proc)
    return proc


def _wait_ready(proc: subprocess.Popen[str], kind: str, timeout: float = 30.0) -> str:
    """The base URL from the server's `READY <base_url>` line."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put("")  # EOF

    threading.Thread(target=pump, name=f"{kind}-stdout", daemon=True).start()
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
        except queue.Empty:
            raise RuntimeError(f"fake {kind} server not ready after {timeout:.0f} s") from None
        if line.startswith("READY "):
            return line.split(maxsplit=1)[1].strip()
        if not line:
            raise RuntimeError(f"fake {kind} server exited (code {proc.wait()}) before READY")


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def start_servers(stack: ExitStack, *answers: str) -> list[Servers]:
    """A Dify and a relay fake per answer, all started at once (imports take seconds)."""
    procs = [
        (launch(stack, "dify", DIFY_KEY, answer), launch(stack, "relay", RELAY_KEY, answer))
        for answer in answers
    ]
    return [
        Servers(dify=_wait_ready(dify, "dify"), relay=_wait_ready(relay, "relay"))
        for dify, relay in procs
    ]


# --------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, `q` in [0, 100]."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def time_interleaved(
    cases: dict[str, SyncCall], n: int, warmup: int, batch: int
) -> dict[str, list[float]]:
    """Per-call wall times in ms, `n` per case, cases run in round-robin batches."""
    for call in cases.values():
        for _ in range(warmup):
            call()
    samples: dict[str, list[float]] = {name: [] for name in cases}
    clock = time.perf_counter_ns
    done = 0
    while done < n:
        k = min(batch, n - done)
        for name, call in cases.items():
            out = samples[name]
            for _ in range(k):
                start = clock()
                call()
                out.append((clock() - start) / 1e6)
        done += k
    return samples


def check(name: str, got: object, expected: object) -> None:
    """Fail loudly when a case does not produce what the server sent."""
    if got != expected:
        raise RuntimeError(f"{name}: unexpected result {got!r:.200} (expected {expected!r:.200})")


# --------------------------------------------------------------------------- request bodies


def dify_body(mode: str) -> dict[str, Any]:
    return {"inputs": {}, "user": USER, "response_mode": mode, "query": PROMPT}


def relay_body(stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}]}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def dify_headers() -> dict[str, str]:
    return {"authorization": f"Bearer {DIFY_KEY}"}


def relay_headers() -> dict[str, str]:
    return {"authorization": f"Bearer {RELAY_KEY}"}


def _answer(data: dict[str, Any]) -> str:
    if "answer" in data:  # Dify
        answer: str = data["answer"]
        return answer
    content: str = data["choices"][0]["message"]["content"]
    return content


# --------------------------------------------------------------------------- raw sync calls


def raw_dify_blocking(client: httpx.Client, base_url: str) -> Callable[[], str]:
    url, body, headers = f"{base_url}/chat-messages", dify_body("blocking"), dify_headers()

    def call() -> str:
        response = client.post(url, json=body, headers=headers)
        response.raise_for_status()
        answer: str = json.loads(response.content)["answer"]
        return answer

    return call


def raw_dify_stream(client: httpx.Client, base_url: str) -> Callable[[], list[str]]:
    url, body, headers = f"{base_url}/chat-messages", dify_body("streaming"), dify_headers()

    def call() -> list[str]:
        parts: list[str] = []
        with connect_sse(client, "POST", url, json=body, headers=headers) as source:
            source.response.raise_for_status()
            for sse in source.iter_sse():
                if not sse.data:  # `event: ping`
                    continue
                data = json.loads(sse.data)
                if data["event"] == "message" and data["answer"]:
                    parts.append(data["answer"])
        return parts

    return call


def raw_relay_blocking(client: httpx.Client, base_url: str) -> Callable[[], str]:
    url, body, headers = f"{base_url}/chat/completions", relay_body(False), relay_headers()

    def call() -> str:
        response = client.post(url, json=body, headers=headers)
        response.raise_for_status()
        content: str = json.loads(response.content)["choices"][0]["message"]["content"]
        return content

    return call


def raw_relay_stream(client: httpx.Client, base_url: str) -> Callable[[], list[str]]:
    url, body, headers = f"{base_url}/chat/completions", relay_body(True), relay_headers()

    def call() -> list[str]:
        parts: list[str] = []
        with connect_sse(client, "POST", url, json=body, headers=headers) as source:
            source.response.raise_for_status()
            for sse in source.iter_sse():
                if sse.data == "[DONE]":
                    break
                for choice in json.loads(sse.data)["choices"]:
                    content = choice["delta"].get("content")
                    if content:
                        parts.append(content)
        return parts

    return call


# --------------------------------------------------------------------------- models


# Settings go through a dict: pydantic models take plain strings for SecretStr fields and
# field names for aliased ones, which type checkers without the pydantic plugin reject.


def chat_dify(servers: Servers, **kwargs: Any) -> ChatDify:
    settings: dict[str, Any] = {
        "api_key": DIFY_KEY,
        "base_url": servers.dify,
        "user": USER,
        "max_retries": 0,
    }
    return ChatDify(**settings, **kwargs)


def chat_relay(servers: Servers, **kwargs: Any) -> ChatRelay:
    settings: dict[str, Any] = {
        "model": MODEL,
        "api_key": RELAY_KEY,
        "base_url": servers.relay,
        "max_retries": 0,
    }
    return ChatRelay(**settings, **kwargs)


def chat_openai(servers: Servers) -> Any:
    import openai
    from langchain_openai import ChatOpenAI

    settings: dict[str, Any] = {
        "model": MODEL,
        "base_url": servers.relay,
        "api_key": RELAY_KEY,
        "max_retries": 0,
        # No timeout, like the default (None), but unhashable: langchain-openai then builds
        # this model its own httpx client instead of reusing a process-wide cached one, which
        # would carry connections of a closed event loop into the next asyncio.run().
        "timeout": openai.Timeout(None),
    }
    return ChatOpenAI(**settings)


async def close_model(model: Any) -> None:
    """Release a model's async HTTP client in the loop that used it."""
    if isinstance(model, ChatDify | ChatRelay):
        await model.aclose()
    elif type(model).__name__ == "ChatOpenAI":
        await model.root_async_client.close()


class NoIOChatModel(BaseChatModel):
    """LangChain's own floor: a chat model that answers without any I/O."""

    @property
    def _llm_type(self) -> str:
        return "no-io"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=SHORT_ANSWER))])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._generate(messages, stop)


class AiohttpChatModel(BaseChatModel):
    """About the best any LangChain chat model can do: one raw aiohttp POST, no checks.

    Async only; `session` must belong to the running loop.
    """

    url: str
    session: Any = None

    @property
    def _llm_type(self) -> str:
        return "raw-aiohttp"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        raise NotImplementedError("async only")

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        body, headers = relay_body(False), relay_headers()
        async with self.session.post(self.url, json=body, headers=headers) as response:
            response.raise_for_status()
            text = _answer(json.loads(await response.read()))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


def invoke_text(model: Any) -> Callable[[], str]:
    def call() -> str:
        content: str = model.invoke(PROMPT).content
        return content

    return call


def stream_parts(model: Any) -> Callable[[], list[str]]:
    def call() -> list[str]:
        return [chunk.content for chunk in model.stream(PROMPT) if chunk.content]

    return call


# --------------------------------------------------------------------------- 1. sequential


@dataclass(frozen=True, slots=True)
class Ratio:
    """`case` compared with `baseline`; `met` is None when there is no target."""

    case: str
    baseline: str
    value: float
    target: str | None
    met: bool | None


def sequential(servers: Servers, cfg: Config) -> dict[str, Any]:
    """Measurement 1: sequential invoke latency."""
    with httpx.Client() as client:
        cases: dict[str, SyncCall] = {
            "raw httpx: Dify blocking": raw_dify_blocking(client, servers.dify),
            "raw httpx: Dify streaming (httpx-sse)": _joined(raw_dify_stream(client, servers.dify)),
            "raw httpx: relay": raw_relay_blocking(client, servers.relay),
            "ChatDify(blocking).invoke": invoke_text(chat_dify(servers, response_mode="blocking")),
            "ChatDify().invoke (streaming)": invoke_text(chat_dify(servers)),
            "ChatRelay.invoke": invoke_text(chat_relay(servers)),
        }
        if HAVE_OPENAI:
            cases["ChatOpenAI.invoke"] = invoke_text(chat_openai(servers))
        cases["reference: no-I/O BaseChatModel.invoke"] = invoke_text(NoIOChatModel())
        for name, call in cases.items():
            check(name, call(), SHORT_ANSWER)
        samples = time_interleaved(cases, cfg.seq_n, cfg.seq_warmup, cfg.batch)
    stats = {
        name: {"median_ms": statistics.median(xs), "p90_ms": percentile(xs, 90), "n": len(xs)}
        for name, xs in samples.items()
    }
    pairs = [
        ("ChatDify(blocking).invoke", "raw httpx: Dify blocking", True),
        ("ChatDify().invoke (streaming)", "raw httpx: Dify streaming (httpx-sse)", True),
        ("ChatRelay.invoke", "raw httpx: relay", True),
        ("ChatOpenAI.invoke", "raw httpx: relay", False),
    ]
    ratios = []
    for case, base, ours in pairs:
        if case not in stats:
            continue
        value = stats[case]["median_ms"] / stats[base]["median_ms"]
        ratios.append(
            Ratio(
                case,
                base,
                value,
                f"≤ {SEQ_TARGET}×" if ours else None,
                value <= SEQ_TARGET if ours else None,
            )
        )
    return {"stats": stats, "ratios": [asdict(r) for r in ratios]}


def _joined(call: Callable[[], list[str]]) -> Callable[[], str]:
    def joined() -> str:
        return "".join(call())

    return joined


# --------------------------------------------------------------------------- 2. async


async def fire(call: AsyncCall, n: int, concurrency: int) -> None:
    """`n` calls, at most `concurrency` in flight."""
    sem = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with sem:
            await call()

    await asyncio.gather(*(one() for _ in range(n)))


async def run_throughput(factory: AsyncFactory, name: str, cfg: Config) -> float:
    """One round of one case, in its own event loop: calls per second."""
    async with AsyncExitStack() as stack:
        call = await factory(stack)
        check(name, await call(), SHORT_ANSWER)
        await fire(call, cfg.async_warmup, cfg.concurrency)
        start = time.perf_counter()
        await fire(call, cfg.async_n, cfg.concurrency)
        elapsed = time.perf_counter() - start
    return cfg.async_n / elapsed


def model_factory(make: Callable[[], Any]) -> AsyncFactory:
    async def factory(stack: AsyncExitStack) -> AsyncCall:
        model = make()  # inside the running loop, once per measurement
        stack.push_async_callback(close_model, model)
        return model_call(model)

    return factory


def model_call(model: Any) -> AsyncCall:
    async def call() -> str:
        message = await model.ainvoke(PROMPT)
        content: str = message.content
        return content

    return call


def aiohttp_model_factory(url: str) -> AsyncFactory:
    async def factory(stack: AsyncExitStack) -> AsyncCall:
        session = await stack.enter_async_context(aiohttp.ClientSession())
        return model_call(AiohttpChatModel(url=url, session=session))

    return factory


def raw_httpx_factory(
    url: str, body: dict[str, Any], headers: dict[str, str], *, aiohttp_transport: bool = False
) -> AsyncFactory:
    async def factory(stack: AsyncExitStack) -> AsyncCall:
        transport = AiohttpTransport() if aiohttp_transport else None
        client = await stack.enter_async_context(httpx.AsyncClient(transport=transport))

        async def call() -> str:
            response = await client.post(url, json=body, headers=headers)
            response.raise_for_status()
            return _answer(json.loads(response.content))

        return call

    return factory


def raw_aiohttp_factory(url: str, body: dict[str, Any], headers: dict[str, str]) -> AsyncFactory:
    async def factory(stack: AsyncExitStack) -> AsyncCall:
        session = await stack.enter_async_context(aiohttp.ClientSession())

        async def call() -> str:
            async with session.post(url, json=body, headers=headers) as response:
                response.raise_for_status()
                return _answer(json.loads(await response.read()))

        return call

    return factory


OPENAI_ASYNC = "ChatOpenAI.ainvoke"
RELAY_HTTPX_ASYNC = 'ChatRelay(async_backend="httpx").ainvoke'
AIOHTTP_MODEL_ASYNC = "reference: minimal BaseChatModel over raw aiohttp: relay"


def throughput(servers: Servers, cfg: Config) -> dict[str, Any]:
    """Measurement 2: async calls/s with `cfg.concurrency` in flight, one event loop each.

    Every case runs `cfg.async_rounds` times, rounds interleaved; the median is reported.
    """
    dify_url, relay_url = f"{servers.dify}/chat-messages", f"{servers.relay}/chat/completions"
    dify_args = (dify_url, dify_body("blocking"), dify_headers())
    relay_args = (relay_url, relay_body(False), relay_headers())
    cases: dict[str, AsyncFactory] = {
        "raw aiohttp: Dify blocking": raw_aiohttp_factory(*dify_args),
        "raw aiohttp: relay": raw_aiohttp_factory(*relay_args),
        "raw httpx.AsyncClient: relay": raw_httpx_factory(*relay_args),
        "reference: raw httpx + httpx-aiohttp: relay": raw_httpx_factory(
            *relay_args, aiohttp_transport=True
        ),
        "reference: no-I/O BaseChatModel.ainvoke": model_factory(NoIOChatModel),
        AIOHTTP_MODEL_ASYNC: aiohttp_model_factory(relay_url),
        "ChatDify(blocking).ainvoke": model_factory(
            lambda: chat_dify(servers, response_mode="blocking")
        ),
        "ChatRelay.ainvoke": model_factory(lambda: chat_relay(servers)),
        RELAY_HTTPX_ASYNC: model_factory(lambda: chat_relay(servers, async_backend="httpx")),
    }
    if HAVE_OPENAI:
        cases[OPENAI_ASYNC] = model_factory(lambda: chat_openai(servers))
    rounds: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(cfg.async_rounds):
        for name, factory in cases.items():
            rounds[name].append(asyncio.run(run_throughput(factory, name, cfg)))
    medians = {name: statistics.median(rates) for name, rates in rounds.items()}
    stats = {
        name: {
            "calls_per_s": medians[name],
            "min": min(rates),
            "max": max(rates),
            "rounds": rates,
            "n": cfg.async_n,
        }
        for name, rates in rounds.items()
    }

    def rate(name: str) -> float:
        return medians[name]

    ratios = []
    if OPENAI_ASYNC in stats:
        for case in ("ChatDify(blocking).ainvoke", "ChatRelay.ainvoke"):
            value = rate(case) / rate(OPENAI_ASYNC)
            target = f"≥ {ASYNC_TARGET:g}×"
            ratios.append(Ratio(case, OPENAI_ASYNC, value, target, value >= ASYNC_TARGET))
        for case in (RELAY_HTTPX_ASYNC, AIOHTTP_MODEL_ASYNC, "raw aiohttp: relay"):
            ratios.append(Ratio(case, OPENAI_ASYNC, rate(case) / rate(OPENAI_ASYNC), None, None))
    for case, base in (
        ("ChatDify(blocking).ainvoke", "raw aiohttp: Dify blocking"),
        ("ChatRelay.ainvoke", "raw aiohttp: relay"),
        (RELAY_HTTPX_ASYNC, "raw httpx.AsyncClient: relay"),
    ):
        ratios.append(Ratio(case, base, rate(case) / rate(base), None, None))
    return {"stats": stats, "ratios": [asdict(r) for r in ratios]}


# --------------------------------------------------------------------------- 3. stream


def stream(servers: Servers, cfg: Config) -> dict[str, Any]:
    """Measurement 3: total time to consume a STREAM_CHUNKS-chunk stream."""
    with httpx.Client() as client:
        cases: dict[str, SyncCall] = {
            "raw httpx + httpx-sse: Dify": raw_dify_stream(client, servers.dify),
            "raw httpx + httpx-sse: relay": raw_relay_stream(client, servers.relay),
            "ChatDify().stream": stream_parts(chat_dify(servers)),
            "ChatRelay.stream": stream_parts(chat_relay(servers)),
        }
        if HAVE_OPENAI:
            cases["ChatOpenAI.stream"] = stream_parts(chat_openai(servers))
        chunks: dict[str, int] = {}
        for name, call in cases.items():
            parts = call()
            assert isinstance(parts, list)
            check(name, "".join(parts), LONG_ANSWER)
            check(f"{name} (content chunks)", len(parts), STREAM_CHUNKS)
            chunks[name] = len(parts)
        samples = time_interleaved(cases, cfg.stream_n, cfg.stream_warmup, max(cfg.batch // 2, 1))
    stats = {
        name: {
            "median_ms": statistics.median(xs),
            "p90_ms": percentile(xs, 90),
            "n": len(xs),
            "chunks": chunks[name],
        }
        for name, xs in samples.items()
    }
    pairs = [
        ("ChatDify().stream", "raw httpx + httpx-sse: Dify", True),
        ("ChatRelay.stream", "raw httpx + httpx-sse: relay", True),
        ("ChatOpenAI.stream", "raw httpx + httpx-sse: relay", False),
    ]
    ratios = []
    for case, base, ours in pairs:
        if case not in stats:
            continue
        value = stats[case]["median_ms"] / stats[base]["median_ms"]
        target = f"≤ {STREAM_TARGET:g}×" if ours else None
        ratios.append(Ratio(case, base, value, target, value <= STREAM_TARGET if ours else None))
    return {"stats": stats, "ratios": [asdict(r) for r in ratios]}


# --------------------------------------------------------------------------- report


def versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def header(meta: dict[str, Any]) -> str:
    pkgs = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    return (
        f"dify-lc core benchmark — {meta['date']} — Python {meta['python']} — "
        f"{meta['cpus']} CPUs — {pkgs}{' — QUICK' if meta['quick'] else ''}"
    )


def _verdict(met: bool | None) -> str:
    return "—" if met is None else ("met" if met else "**MISSED**")


def table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def ratio_table(ratios: Sequence[dict[str, Any]], unit: str) -> str:
    return table(
        ("case", "vs", unit, "target", "verdict"),
        [
            (r["case"], r["baseline"], f"{r['value']:.2f}×", r["target"] or "—", _verdict(r["met"]))
            for r in ratios
        ],
    )


def report(results: dict[str, Any], cfg: Config) -> str:
    seq, thr, stm = results["sequential"], results["async"], results["stream"]
    parts = [
        header(results["meta"]),
        "",
        f"## 1. Sequential invoke (N={cfg.seq_n} after {cfg.seq_warmup} warm-up calls, "
        "interleaved)",
        "",
        table(
            ("case", "median ms", "p90 ms"),
            [
                (name, f"{s['median_ms']:.3f}", f"{s['p90_ms']:.3f}")
                for name, s in seq["stats"].items()
            ],
        ),
        "",
        ratio_table(seq["ratios"], "median ratio"),
        "",
        f"## 2. Async throughput ({cfg.async_n} calls after {cfg.async_warmup} warm-up, "
        f"Semaphore({cfg.concurrency}), median of {cfg.async_rounds} rounds)",
        "",
        table(
            ("case", "calls/s", "min – max"),
            [
                (name, f"{s['calls_per_s']:.0f}", f"{s['min']:.0f} – {s['max']:.0f}")
                for name, s in thr["stats"].items()
            ],
        ),
        "",
        ratio_table(thr["ratios"], "calls/s ratio"),
        "",
        f"## 3. {STREAM_CHUNKS}-chunk stream (median of {cfg.stream_n} after "
        f"{cfg.stream_warmup} warm-up, interleaved)",
        "",
        table(
            ("case", "chunks", "median ms", "p90 ms"),
            [
                (name, str(s["chunks"]), f"{s['median_ms']:.3f}", f"{s['p90_ms']:.3f}")
                for name, s in stm["stats"].items()
            ],
        ),
        "",
        ratio_table(stm["ratios"], "median ratio"),
        "",
    ]
    targets = [r for m in (seq, thr, stm) for r in m["ratios"] if r["met"] is not None]
    missed = [r for r in targets if not r["met"]]
    summary = f"Targets: {len(targets) - len(missed)}/{len(targets)} met"
    if missed:
        summary += " — missed: " + "; ".join(
            f"{r['case']} vs {r['baseline']} = {r['value']:.2f}× (target {r['target']})"
            for r in missed
        )
    parts.append(summary)
    return "\n".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="few iterations (smoke run)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also save results as JSON")
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FULL

    results: dict[str, Any] = {
        "meta": {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "versions": versions(),
            "quick": args.quick,
        },
        "config": asdict(cfg),
    }
    started = time.perf_counter()
    with ExitStack() as stack:  # stops the servers, also on error
        short, long = start_servers(stack, SHORT_ANSWER, LONG_ANSWER)
        results["sequential"] = sequential(short, cfg)
        results["async"] = throughput(short, cfg)
        results["stream"] = stream(long, cfg)
    results["meta"]["duration_s"] = round(time.perf_counter() - started, 1)

    print(report(results, cfg))
    print(f"\n(total {results['meta']['duration_s']} s)")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
