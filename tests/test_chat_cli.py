"""`dify-lc chat` against the fake servers: streaming, backend and latency, one-line errors."""

from __future__ import annotations

import io

import pytest

from dify_lc.chat_cli import run_chat
from dify_lc.testing import DEFAULT_ANSWER, FakeDify, FakeRelay, Fault

KEY = "app-chat-cli-key-0123456789"


def test_one_message_streams_and_shows_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeDify(api_key=KEY) as dify:
        monkeypatch.setenv("DIFY_API_KEY", KEY)
        monkeypatch.setenv("DIFY_BASE_URL", dify.base_url)
        out = io.StringIO()
        assert run_chat(message="hi", user="cli-user", out=out) == 0
        text = out.getvalue()
        assert DEFAULT_ANSWER in text
        assert "[dify · " in text
        assert dify.requests[-1].json["user"] == "cli-user"


def test_interactive_session_continues_the_dify_conversation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with FakeDify(api_key=KEY) as dify:
        monkeypatch.setenv("DIFY_API_KEY", KEY)
        monkeypatch.setenv("DIFY_BASE_URL", dify.base_url)
        out = io.StringIO()
        assert run_chat(stdin=io.StringIO("first\nsecond\n/quit\n"), out=out) == 0
        bodies = [r.json for r in dify.requests if r.path.endswith("/chat-messages")]
        assert len(bodies) == 2
        assert "conversation_id" not in bodies[0]
        assert bodies[1]["conversation_id"]
        assert bodies[1]["query"] == "second"


def test_bad_key_is_one_clear_line_and_a_nonzero_exit(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeDify(api_key=KEY) as dify:
        monkeypatch.setenv("DIFY_API_KEY", "app-wrong-key-0123456789")
        monkeypatch.setenv("DIFY_BASE_URL", dify.base_url)
        assert run_chat(message="hi", out=io.StringIO()) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("error: AuthenticationError")
    assert "DIFY_API_KEY" in err[0]
    assert "app-wrong-key-0123456789" not in err[0]


def test_unreachable_and_rate_limited(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RELAY_API_KEY", "sk-chat-cli-key-0123456789")
    monkeypatch.setenv("RELAY_BASE_URL", "http://127.0.0.1:9/v1")
    assert run_chat(relay=True, message="hi", out=io.StringIO()) == 1
    assert "cannot reach the server" in capsys.readouterr().err
    with FakeRelay(api_key="sk-chat-cli-key-0123456789") as relay:
        relay.set_default(Fault.rate_limited())
        monkeypatch.setenv("RELAY_BASE_URL", relay.base_url)
        assert run_chat(relay=True, message="hi", out=io.StringIO()) == 1
    assert "rate limited" in capsys.readouterr().err


def test_missing_key_is_a_setup_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DIFY_API_KEY", raising=False)
    assert run_chat(message="hi", out=io.StringIO()) == 2
    assert "DIFY_API_KEY" in capsys.readouterr().err
