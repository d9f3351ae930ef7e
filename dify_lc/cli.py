"""The ``dify-lc`` command line: ``demo`` (offline migration story), ``chat``, ``report``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import datetime, timezone

__all__ = ["main"]


def _time(value: str) -> datetime:
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO time: {value!r}") from exc
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)  # noqa: UP017


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dify-lc", description="dify-lc tools")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="the migration story, offline: naive vs resilient client on fake channels",
        description="Starts fake Dify and relay servers on loopback (official channel at 61.4%% "
        "success with slow answers, relay at 99.7%%) and sends the same traffic through a naive "
        "ChatDify and a ResilientChatModel with a 5%%→20%%→50%%→100%% canary ramp.",
    )
    demo.add_argument("--requests", type=int, default=3000, help="requests per client")
    demo.add_argument("--users", type=int, default=400, help="simulated users")
    demo.add_argument("--qps", type=float, default=250.0, help="request rate")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--time-scale", type=float, default=100.0, help="story seconds per second")
    demo.add_argument("--log", default="dify-lc-demo-events.jsonl", help="JSON event log path")
    demo.add_argument("--plot", metavar="OUT.png", help="also draw latency distributions")
    demo.add_argument("--no-progress", action="store_true")
    chat = sub.add_parser(
        "chat",
        help="talk to a Dify app or a relay from the terminal",
        description="Streams answers from a real Dify app (DIFY_API_KEY, DIFY_BASE_URL), a relay "
        "(--relay: RELAY_API_KEY, RELAY_BASE_URL) or a resilient model (--config routes.toml), "
        "showing which backend answered and how long it took.",
    )
    chat.add_argument("--config", help="a routes.toml for a resilient model")
    chat.add_argument("--relay", action="store_true", help="talk to the relay instead of Dify")
    chat.add_argument("--model", help="relay model name (default RELAY_MODEL or gpt-4o)")
    chat.add_argument("--user", help="end-user id sent to Dify")
    chat.add_argument("-m", "--message", help="send one message and exit")
    report = sub.add_parser(
        "report",
        help="compare channels from a JSON event log",
        description="Side-by-side comparison of channels (backends or routes) from the JSON "
        "event log written with dify_lc.configure_logging(json=True).",
    )
    report.add_argument("log", help="a JSON-lines event file ('-' for stdin)")
    report.add_argument("--since", type=_time, help="only events at or after this ISO time")
    report.add_argument("--until", type=_time, help="only events before this ISO time")
    report.add_argument("--by", choices=("backend", "route"), default="backend")
    report.add_argument("--format", choices=("table", "markdown", "json"), default="table")
    report.add_argument("--plot", metavar="OUT.png", help="also draw latency distributions")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dify-lc`` command."""
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from dify_lc.demo import DemoConfig, run_demo

        return run_demo(
            DemoConfig(
                requests=args.requests,
                users=args.users,
                qps=args.qps,
                seed=args.seed,
                time_scale=args.time_scale,
                log=args.log,
                plot=args.plot,
                progress=not args.no_progress,
            )
        )
    if args.command == "chat":
        from dify_lc.chat_cli import run_chat

        return run_chat(
            config=args.config,
            relay=args.relay,
            model=args.model,
            user=args.user,
            message=args.message,
        )
    if args.command == "report":
        from dify_lc.observability.report import build_report, plot, render

        try:
            stream = sys.stdin if args.log == "-" else open(args.log, encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            print(f"dify-lc report: cannot read {args.log}: {exc.strerror}", file=sys.stderr)
            return 2
        with stream:
            report = build_report(stream, since=args.since, until=args.until, by=args.by)
        print(render(report, args.format))
        if args.plot:
            try:
                plot(report, args.plot)
            except RuntimeError as exc:
                print(f"dify-lc report: {exc}", file=sys.stderr)
                return 2
            print(f"plot written to {args.plot}", file=sys.stderr)
        return 0
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
