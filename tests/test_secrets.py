"""Plant a distinct key in every configuration path, then look for it everywhere: zero hits.

Places searched: every log line (JSON events, user log lines, tracebacks), exception strings
and reprs (including chained causes), model reprs and dumps, ``response_metadata``, metrics
snapshots, a Prometheus scrape, and the committed cassettes.
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from dify_lc import (
    BreakerPolicy,
    ChatDify,
    ChatRelay,
    DifyClient,
    DifyWorkflow,
    ResilientChatModel,
    configure_logging,
    from_config,
)
from dify_lc.observability.prometheus import PrometheusMetrics
from dify_lc.testing import FakeDify, FakeRelay, Fault

KEYS = {
    "dify_arg": "app-fakeplantedDIFYARG0001",
    "dify_env": "app-fakeplantedDIFYENV0002",
    "relay_arg": "sk-fakeplantedRELAYARG0003",
    "relay_env": "sk-fakeplantedRELAYENV0004",
    "config_dify": "app-fakeplantedCONFIG0005",
    "config_relay": "sk-fakeplantedCONFIG00006",
    "client": "app-fakeplantedCLIENT0007",
    "workflow": "app-fakeplantedWORKFLOW08",
}
ROOT = Path(__file__).resolve().parent.parent


def _chain(exc: BaseException | None) -> str:
    parts = []
    while exc is not None:
        parts += [str(exc), repr(exc)]
        response = getattr(exc, "response", None)
        if isinstance(response, httpx.Response):
            parts += [repr(response), str(dict(response.headers)), response.text]
            parts.append(str(getattr(response, "_request", None)))
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


def test_no_planted_key_shows_up_anywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    stream = io.StringIO()
    handler = configure_logging(json=True, stream=stream, level="DEBUG")
    app_log = logging.getLogger("app")  # the application's own logs go through the same handler
    app_log.addHandler(handler)
    app_log.setLevel(logging.INFO)
    registry = CollectorRegistry()
    try:
        with (
            FakeDify(api_key=KEYS["dify_env"]) as dify,
            FakeRelay(api_key=KEYS["relay_env"]) as relay,
        ):
            monkeypatch.setenv("DIFY_API_KEY", KEYS["dify_env"])
            monkeypatch.setenv("DIFY_BASE_URL", dify.base_url)
            monkeypatch.setenv("RELAY_API_KEY", KEYS["relay_env"])
            monkeypatch.setenv("RELAY_BASE_URL", relay.base_url)
            from_env_dify = ChatDify()
            from_env_relay = ChatRelay(model="gpt-4o")
            wrong_dify = ChatDify(api_key=KEYS["dify_arg"], base_url=dify.base_url, max_retries=0)
            wrong_relay = ChatRelay(
                model="gpt-4o", api_key=KEYS["relay_arg"], base_url=relay.base_url, max_retries=0
            )
            configured = from_config(
                {
                    "routes": [
                        {
                            "name": "official",
                            "type": "dify",
                            "base_url": dify.base_url,
                            "api_key_env": "CFG_DIFY",
                        },
                        {
                            "name": "relay",
                            "type": "relay",
                            "model": "gpt-4o",
                            "base_url": relay.base_url,
                            "api_key_env": "CFG_RELAY",
                        },
                    ]
                },
                env={"CFG_DIFY": KEYS["config_dify"], "CFG_RELAY": KEYS["config_relay"]},
            )
            client = DifyClient(api_key=KEYS["client"], base_url=dify.base_url)
            workflow = DifyWorkflow(api_key=KEYS["workflow"], base_url=dify.base_url, max_retries=0)
            resilient = ResilientChatModel(
                wrong_dify,
                [from_env_relay],
                metrics=PrometheusMetrics(registry),
                breaker=BreakerPolicy(fail_max=1),
            )
            models: list[Any] = [
                from_env_dify,
                from_env_relay,
                wrong_dify,
                wrong_relay,
                configured,
                workflow,
                resilient,
            ]

            # Successful calls: metadata and events.
            for model in (from_env_dify, from_env_relay, resilient):
                msg = model.invoke("hi")
                seen += [repr(msg), json.dumps(msg.response_metadata, default=str)]
                seen.append("".join(str(c) for c in model.stream("hi")))
            # Failing calls through every path: wrong keys (401), bad config route, hung server.
            for call in (
                lambda: wrong_dify.invoke("hi"),
                lambda: wrong_relay.invoke("hi"),
                lambda: list(wrong_relay.stream("hi")),
                lambda: configured.invoke("hi"),
                lambda: client.get_conversations(user="u"),
                lambda: workflow.invoke({"x": 1}),
            ):
                try:
                    call()
                except Exception as exc:
                    seen.append(_chain(exc))
                    logging.getLogger("app").exception("call failed: %r", exc)
            dify.set_default(Fault(hang=True))
            slow = ChatDify(
                api_key=KEYS["dify_arg"], base_url=dify.base_url, read_timeout=0.1, max_retries=0
            )
            try:
                slow.invoke("hi")
            except Exception as exc:
                seen.append(_chain(exc))
            # A user who logs requests and responses through the configured handler.
            log = logging.getLogger("app.http")
            for key in KEYS.values():
                log.info("request headers: %s", {"Authorization": f"Bearer {key}"})
                log.info("sent: Authorization: Bearer %s", key)
            for model in models:
                seen += [repr(model), str(model)]
                seen.append(json.dumps(model.model_dump(), default=str))
            seen += [repr(client), json.dumps(resilient.metrics.snapshot(), default=str)]  # type: ignore[union-attr]
            seen.append(generate_latest(registry).decode())
    finally:
        root = logging.getLogger("dify_lc")
        root.removeHandler(handler)
        root.setLevel(logging.NOTSET)
        root.propagate = True
        app_log.removeHandler(handler)
    seen.append(stream.getvalue())
    haystack = "\n".join(seen)
    assert "llm.attempt" in haystack  # we did look at real events
    assert "AuthenticationError" in haystack
    assert "request headers" in haystack  # and at the application's own lines
    leaks = [name for name, key in KEYS.items() if key in haystack]
    assert leaks == []


def test_user_log_lines_through_the_handler_are_redacted() -> None:
    stream = io.StringIO()
    handler = configure_logging(json=False, stream=stream)
    try:
        ChatDify(api_key=KEYS["dify_arg"], base_url="http://127.0.0.1:9/v1")  # registers the key
        log = logging.getLogger("dify_lc.app")
        log.warning("key is %s", KEYS["dify_arg"])
        log.warning("headers %s", {"x-api-key": "whatever-opaque-value"})
        try:
            raise RuntimeError(f"boom {KEYS['dify_arg']}")
        except RuntimeError:
            log.exception("failed")
    finally:
        logging.getLogger("dify_lc").removeHandler(handler)
        logging.getLogger("dify_lc").setLevel(logging.NOTSET)
        logging.getLogger("dify_lc").propagate = True
    text = stream.getvalue()
    assert "failed" in text
    assert "RuntimeError" in text
    assert KEYS["dify_arg"] not in text
    assert "whatever-opaque-value" not in text


def test_committed_cassettes_hold_no_credentials() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "check_cassette_secrets.py")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert not [
        k for k in KEYS.values() for p in (ROOT / "cassettes").rglob("*.yaml") if k in p.read_text()
    ]
