"""`python -m dify_lc.testing dify|relay [options]`: serve a fake until SIGTERM or SIGINT.

Prints `READY <base_url>` on stdout (flushed) once the port accepts connections, so a parent
process (a benchmark) can read the URL and start. Recording is off unless `--record` is given:
nobody reads it in another process, and it would grow without bound.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from ._chaos import Chaos, LogNormal
from ._dify import DEFAULT_ANSWER, FakeDify
from ._faults import Fault
from ._relay import FakeRelay
from ._server import FakeServer


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dify_lc.testing", description=__doc__)
    parser.add_argument("server", choices=("dify", "relay"))
    parser.add_argument("--host", default="127.0.0.1", help="a loopback address")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--api-key", default=None, help="default: app-test / sk-test")
    parser.add_argument("--answer", default=DEFAULT_ANSWER)
    parser.add_argument("--chunk-size", type=int, default=3)
    parser.add_argument("--chunk-delay", type=float, default=0.0, metavar="S")
    parser.add_argument("--first-token-delay", type=float, default=0.0, metavar="S")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--record", action="store_true", help="keep requests in memory")
    parser.add_argument(
        "--default-fault",
        default=None,
        metavar="JSON",
        help="Fault fields applied to every generate request, e.g. '{\"status\": 503}'",
    )
    parser.add_argument(
        "--chaos",
        default=None,
        metavar="JSON",
        help="seeded random faults and latency, e.g. "
        '\'{"faults": [[0.2, {"status": 503}]], "first_token": {"median": 0.05, "sigma": 0.8}}\'',
    )
    dify = parser.add_argument_group("dify")
    dify.add_argument("--mode", default="chat", choices=("chat", "agent-chat", "advanced-chat"))
    dify.add_argument("--ping-interval", type=float, default=10.0, metavar="S")
    relay = parser.add_argument_group("relay")
    relay.add_argument("--model", default="gpt-4o")
    relay.add_argument("--bad-key-error", default="auth_error", choices=("auth_error", "no_db"))
    return parser


def _fault(raw: str | None) -> Fault | None:
    if raw is None:
        return None
    fields: dict[str, Any] = json.loads(raw)
    if isinstance(fields.get("body"), str):
        fields["body"] = fields["body"].encode()
    return Fault(**fields)


def _fault_from(fields: dict[str, Any]) -> Fault:
    if isinstance(fields.get("body"), str):
        fields["body"] = fields["body"].encode()
    return Fault(**fields)


def _chaos(raw: str | None) -> Chaos | None:
    """``{"faults": [[p, {fault fields}], ...], "first_token": {"median", "sigma", "cap"}}``."""
    if raw is None:
        return None
    spec: dict[str, Any] = json.loads(raw)
    faults = [(float(p), _fault_from(dict(f))) for p, f in spec.get("faults", [])]
    latency = spec.get("first_token")
    return Chaos(faults=faults, first_token=LogNormal(**latency) if latency else None)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    common: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "answer": args.answer,
        "chunk_size": args.chunk_size,
        "chunk_delay": args.chunk_delay,
        "first_token_delay": args.first_token_delay,
        "seed": args.seed,
        "record": args.record,
    }
    server: FakeServer
    if args.server == "dify":
        server = FakeDify(
            api_key=args.api_key or "app-test",
            mode=args.mode,
            ping_interval=args.ping_interval or None,
            **common,
        )
    else:
        server = FakeRelay(
            api_key=args.api_key or "sk-test",
            model=args.model,
            bad_key_error=args.bad_key_error,
            **common,
        )
    server.set_default(_fault(args.default_fault))
    server.set_chaos(_chaos(args.chaos))

    done = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with server:
        print(f"READY {server.base_url}", flush=True)
        # A timeout keeps the main thread responsive to signals.
        while not done.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
