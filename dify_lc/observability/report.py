"""The channel comparison report: a JSON event log in, a side-by-side table out.

Each backend's own health comes from its attempts (``llm.attempt`` events, and ``llm.call``
events written by :class:`~dify_lc.observability.callbacks.MetricsCallbackHandler`); what
callers saw after retries and fallbacks comes from the resilient model's ``llm.call`` events
(the "calls" row). Percentiles here are exact (nearest rank): the log is finite.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["ChannelStats", "Report", "build_report", "render"]

_CALLS = "(calls)"


@dataclass
class ChannelStats:
    """What one channel did in the window."""

    name: str
    requests: int = 0
    ok: int = 0
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0

    @property
    def success_rate(self) -> float | None:
        return self.ok / self.requests if self.requests else None

    def latency(self, q: float) -> float | None:
        return _percentile(self.latencies, q)

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "success_rate": self.success_rate,
            "latency_ms": {f"p{q}": self.latency(q) for q in (50, 95, 99)},
            "ttft_ms": {"p50": _percentile(self.ttfts, 50), "p95": _percentile(self.ttfts, 95)},
            "errors": dict(self.errors.most_common()),
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "cost": round(self.cost, 6),
        }


@dataclass
class Report:
    channels: dict[str, ChannelStats]
    lines: int = 0
    events: int = 0
    malformed: int = 0
    by: str = "backend"

    def to_dict(self) -> dict[str, Any]:
        return {
            "by": self.by,
            "lines": self.lines,
            "events": self.events,
            "malformed": self.malformed,
            "channels": {k: v.to_dict() for k, v in self.channels.items()},
            "deltas": _deltas(self),
        }


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _when(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def build_report(
    lines: Iterable[str],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    by: str = "backend",
) -> Report:
    """Aggregate event lines; malformed lines are counted, never fatal."""
    channels: dict[str, ChannelStats] = defaultdict(lambda: ChannelStats(""))
    report = Report(channels={}, by=by)
    for line in lines:
        report.lines += 1
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            report.malformed += 1
            continue
        if not isinstance(event, dict) or not isinstance(event.get("event"), str):
            report.malformed += 1
            continue
        name = event["event"]
        if name not in ("llm.attempt", "llm.call"):
            continue
        if since or until:
            at = _when(event.get("timestamp"))
            if at is None or (since and at < since) or (until and at >= until):
                continue
        try:
            latency = float(event.get("latency_ms") or 0.0)
        except (TypeError, ValueError):
            report.malformed += 1
            continue
        report.events += 1
        if name == "llm.call" and event.get("source") != "callback":
            key = _CALLS
        elif name == "llm.attempt" and event.get("outcome") not in ("ok", "error", "interrupted"):
            continue  # skipped by a breaker, abandoned by the caller: not a request
        else:
            key = str(event.get(by) or event.get("backend") or "unknown")
        stats = channels[key]
        stats.name = key
        stats.requests += 1
        ok = event.get("outcome") == "ok"
        if ok:
            stats.ok += 1
        else:
            stats.errors[str(event.get("error_type") or "unknown")] += 1
        stats.latencies.append(latency)
        if isinstance(event.get("ttft_ms"), int | float):
            stats.ttfts.append(float(event["ttft_ms"]))
        stats.tokens_in += int(event.get("tokens_in") or 0)
        stats.tokens_out += int(event.get("tokens_out") or 0)
        stats.cost += float(event.get("cost") or 0.0)
    ordered = sorted(channels, key=lambda k: (k == _CALLS, k))
    report.channels = {k: channels[k] for k in ordered}
    return report


def _deltas(report: Report) -> list[dict[str, Any]]:
    names = [k for k in report.channels if k != _CALLS]
    if len(names) < 2:
        return []
    base = report.channels[names[0]]
    out = []
    for other_name in names[1:]:
        other = report.channels[other_name]
        for label, a, b in (
            ("success rate", base.success_rate, other.success_rate),
            ("P50", base.latency(50), other.latency(50)),
            ("P95", base.latency(95), other.latency(95)),
            ("P99", base.latency(99), other.latency(99)),
        ):
            if a is None or b is None:
                continue
            change = (b - a) / a * 100 if a else None
            out.append(
                {
                    "metric": label,
                    "from": base.name,
                    "to": other.name,
                    "a": a,
                    "b": b,
                    "change_pct": change,
                }
            )
    return out


def _fmt_ms(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f} ms" if v >= 10 else f"{v:.1f} ms"


def _fmt_rate(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.1f}%"


def _rows(report: Report) -> tuple[list[str], list[list[str]]]:
    header = [
        "channel",
        "requests",
        "success",
        "P50",
        "P95",
        "P99",
        "TTFT P50",
        "errors",
        "tokens in/out",
        "cost",
    ]
    rows = []
    for stats in report.channels.values():
        errors = ", ".join(f"{k} {v}" for k, v in stats.errors.most_common(3)) or "-"
        rows.append(
            [
                stats.name,
                str(stats.requests),
                _fmt_rate(stats.success_rate),
                _fmt_ms(stats.latency(50)),
                _fmt_ms(stats.latency(95)),
                _fmt_ms(stats.latency(99)),
                _fmt_ms(_percentile(stats.ttfts, 50)),
                errors,
                f"{stats.tokens_in}/{stats.tokens_out}",
                f"{stats.cost:.4f}",
            ]
        )
    return header, rows


def _delta_lines(report: Report) -> list[str]:
    lines = []
    for d in _deltas(report):
        if d["metric"] == "success rate":
            text = f"{_fmt_rate(d['a'])} → {_fmt_rate(d['b'])}"
            change = f"{(d['b'] - d['a']) * 100:+.1f} pts"
        else:
            text = f"{_fmt_ms(d['a'])} → {_fmt_ms(d['b'])}"
            change = "n/a" if d["change_pct"] is None else f"{d['change_pct']:+.0f}%"
        change = change.replace("-", "−")
        lines.append(f"{d['metric']} {d['from']} → {d['to']}: {text}, {change}")
    return lines


def render(report: Report, fmt: str = "table") -> str:
    """``table`` (aligned text), ``markdown`` or ``json``."""
    if fmt == "json":
        return json.dumps(report.to_dict(), indent=2, sort_keys=True)
    header, rows = _rows(report)
    if fmt == "markdown":
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(r) + " |" for r in rows]
    else:
        widths = [max(len(c) for c in col) for col in zip(header, *rows, strict=False)]
        out = ["  ".join(c.ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
        out.append("  ".join("-" * w for w in widths))
        out += [
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
        ]
    deltas = _delta_lines(report)
    if deltas:
        out += ["", *[f"- {d}" if fmt == "markdown" else d for d in deltas]]
    out += ["", f"{report.events} events from {report.lines} lines; {report.malformed} malformed"]
    return "\n".join(out)


def plot(report: Report, path: str) -> None:
    """Latency distributions per channel as a PNG (needs the ``plot`` extra: matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the extra
        raise RuntimeError("--plot needs matplotlib: pip install 'dify-lc[plot]'") from exc
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for stats in report.channels.values():
        if stats.latencies:
            values = sorted(stats.latencies)
            ys = [(i + 1) / len(values) for i in range(len(values))]
            ax.step(values, ys, where="post", label=f"{stats.name} (n={stats.requests})")
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("share of requests ≤ latency")
    ax.set_title("Latency by channel")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
