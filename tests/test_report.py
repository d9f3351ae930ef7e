"""`dify-lc report`: golden output on a fixed log, windows, formats, plot, malformed lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dify_lc.cli import main

DATA = Path(__file__).resolve().parent / "data"
LOG = DATA / "events.jsonl"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["report", str(LOG), *args]) == 0
    return capsys.readouterr().out


def test_table_matches_the_golden_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys) == (DATA / "events_report.txt").read_text()


def test_json_matches_the_golden_file(capsys: pytest.CaptureFixture[str]) -> None:
    got = json.loads(run(capsys, "--format", "json"))
    assert got == json.loads((DATA / "events_report.json").read_text())
    assert got["malformed"] == 2
    official = got["channels"]["official"]
    assert official["requests"] == 40
    assert official["success_rate"] == 0.6
    assert official["errors"] == {"APITimeoutError": 8, "RateLimitError": 8}
    p99 = next(d for d in got["deltas"] if d["metric"] == "P99")
    assert p99["from"] == "official"
    assert p99["to"] == "relay"
    assert p99["change_pct"] < -50


def test_markdown_and_deltas(capsys: pytest.CaptureFixture[str]) -> None:
    out = run(capsys, "--format", "markdown")
    assert out.startswith("| channel | requests |")
    assert "- P99 official → relay:" in out
    assert "−" in out  # a real minus sign in the change


def test_time_window(capsys: pytest.CaptureFixture[str]) -> None:
    lines = [json.loads(x) for x in LOG.read_text().splitlines() if x.startswith("{")]
    stamps = sorted(e["timestamp"] for e in lines if "timestamp" in e)
    middle = stamps[len(stamps) // 2]
    first = json.loads(run(capsys, "--format", "json", "--until", middle))
    second = json.loads(run(capsys, "--format", "json", "--since", middle))
    total = json.loads(run(capsys, "--format", "json"))
    assert first["events"] + second["events"] == total["events"]
    assert 0 < first["events"] < total["events"]


def test_plot_is_a_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "latency.png"
    run(capsys, "--plot", str(out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size > 5_000


def test_missing_file_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "/nonexistent/events.jsonl"]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_report_from_a_real_resilient_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import logging

    from dify_lc import BreakerPolicy, ChatDify, ChatRelay, ResilientChatModel, configure_logging
    from dify_lc.testing import FakeDify, FakeRelay, Fault

    log = tmp_path / "events.jsonl"
    with open(log, "w") as stream:
        handler = configure_logging(json=True, stream=stream)
        try:
            with (
                FakeDify(api_key="app-report-key-0123456789") as dify,
                FakeRelay(api_key="sk-report-key-0123456789") as relay,
            ):
                dify.enqueue(*[Fault.server_error(503)] * 3)
                model = ResilientChatModel(
                    ChatDify(
                        api_key="app-report-key-0123456789",
                        base_url=dify.base_url,
                        backend="official",
                    ),
                    [
                        ChatRelay(
                            model="gpt-4o",
                            api_key="sk-report-key-0123456789",
                            base_url=relay.base_url,
                            backend="relay",
                        )
                    ],
                    breaker=BreakerPolicy(fail_max=10),
                )
                model.use_clock(__import__("time").monotonic, sleep=lambda s: None)
                for _ in range(6):
                    model.invoke("hi")
        finally:
            root = logging.getLogger("dify_lc")
            root.removeHandler(handler)
            root.setLevel(logging.NOTSET)
            root.propagate = True
    assert main(["report", str(log), "--format", "json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["malformed"] == 0
    assert got["channels"]["official"]["errors"] == {"ServerError": 3}
    assert got["channels"]["(calls)"]["requests"] == 6
    assert got["channels"]["(calls)"]["success_rate"] == 1.0
