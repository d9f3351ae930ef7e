"""Replay every cassette under cassettes/ through vcrpy + httpx and check what comes back.

Usage::

    python scripts/check_cassettes.py [--peers ../shared/peers] [--cassettes cassettes]

For each cassette the recorded request is sent again with ``vcr.VCR(record_mode="none")`` (so no
network is ever used) through ``httpx.Client``. The replayed status code, reason phrase, headers
(in order, names compared case-insensitively) and body bytes must equal:

* the peers transcript it was converted from (``cassettes/dify`` and ``cassettes/relay``), when
  the peers folder exists (it does not in CI, where the committed cassettes are checked against
  their own recorded content instead);
* the cassette's own recorded response otherwise (``cassettes/relay_litellm``).

Streaming cassettes (``text/event-stream``) are also replayed with ``httpx.AsyncClient``,
reading the body with ``aiter_bytes``, and, where ``httpx-aiohttp`` is installed, through its
``AiohttpTransport`` (vcrpy's aiohttp stub; differences there are reported as notes, not
failures: vcrpy 8.5's stub never sets aiohttp's ``raw_headers``, which is what httpx-aiohttp
reads, so those replays carry no headers at all). Any response carrying ``Content-Length``
must have a body of exactly that length. Exits non-zero if any cassette does not match, listing
every mismatch.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import httpx
import vcr
from vcr.serialize import deserialize
from vcr.serializers import yamlserializer

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers_to_cassettes import (
    DEFAULT_PEERS,
    DROPPED_RESPONSE_HEADERS,
    FOLDERS,
    REPO_ROOT,
    parse_transcript,
)

# Request headers that httpx computes itself and must not be passed twice.
_AUTO_REQUEST_HEADERS = frozenset({"host", "content-length", "transfer-encoding"})


class Expected:
    def __init__(self, code: int, reason: str, headers: list[tuple[str, str]], body: bytes):
        self.code = code
        self.reason = reason
        self.headers = [(k.lower(), v) for k, v in headers]
        self.body = body


def _load(path: Path) -> tuple[list[Any], list[dict[str, Any]]]:
    return deserialize(path.read_text(encoding="utf-8"), yamlserializer)


def _expected_from_cassette(response: dict[str, Any]) -> Expected:
    headers = [(k, v) for k, values in response["headers"].items() for v in values]
    return Expected(
        response["status"]["code"],
        response["status"]["message"],
        headers,
        response["body"]["string"],
    )


def _expected_from_transcript(path: Path) -> Expected:
    t = parse_transcript(path)
    _version, code, *reason = t.response.start_line.split(" ", 2)
    headers = [(k, v) for k, v in t.response.headers if k.lower() not in DROPPED_RESPONSE_HEADERS]
    return Expected(int(code), reason[0] if reason else "", headers, t.response.body)


def _request_kwargs(request: Any) -> dict[str, Any]:
    headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _AUTO_REQUEST_HEADERS]
    body = request.body or b""
    return {
        "method": request.method,
        "url": request.uri,
        "headers": headers,
        "content": body if body else None,
    }


def _compare(where: str, exp: Expected, resp: httpx.Response, body: bytes) -> list[str]:
    problems = []
    if resp.status_code != exp.code:
        problems.append(f"{where}: status {resp.status_code} != {exp.code}")
    if resp.reason_phrase != exp.reason:
        problems.append(f"{where}: reason {resp.reason_phrase!r} != {exp.reason!r}")
    got_headers = [(k.lower(), v) for k, v in resp.headers.multi_items()]
    if got_headers != exp.headers:
        pairs = zip(got_headers, exp.headers, strict=False)
        first = next(
            (i for i, (got, want) in enumerate(pairs) if got != want),
            min(len(got_headers), len(exp.headers)),
        )
        got = got_headers[first] if first < len(got_headers) else None
        want = exp.headers[first] if first < len(exp.headers) else None
        problems.append(
            f"{where}: headers differ ({len(got_headers)} got, {len(exp.headers)} expected;"
            f" first difference at #{first}: got {got}, want {want})",
        )
    if body != exp.body:
        problems.append(f"{where}: body differs ({len(body)} bytes vs {len(exp.body)} expected)")
    length = resp.headers.get("content-length")
    if length is not None and int(length) != len(body):
        problems.append(f"{where}: Content-Length {length} but body is {len(body)} bytes")
    return problems


def _replay_sync(path: Path, request: Any) -> tuple[httpx.Response, bytes]:
    my_vcr = vcr.VCR(record_mode="none")
    with my_vcr.use_cassette(str(path)), httpx.Client() as client:
        resp = client.request(**_request_kwargs(request))
        return resp, resp.content


async def _replay_async(path: Path, request: Any) -> tuple[httpx.Response, bytes]:
    my_vcr = vcr.VCR(record_mode="none")
    with my_vcr.use_cassette(str(path)):
        async with (
            httpx.AsyncClient() as client,
            client.stream(**_request_kwargs(request)) as resp,
        ):
            chunks = [chunk async for chunk in resp.aiter_bytes()]
    return resp, b"".join(chunks)


async def _replay_aiohttp(path: Path, request: Any) -> tuple[httpx.Response, bytes]:
    from httpx_aiohttp import AiohttpTransport

    my_vcr = vcr.VCR(record_mode="none")
    with my_vcr.use_cassette(str(path)):
        async with (
            httpx.AsyncClient(transport=AiohttpTransport()) as client,
            client.stream(**_request_kwargs(request)) as resp,
        ):
            chunks = [chunk async for chunk in resp.aiter_bytes()]
    return resp, b"".join(chunks)


def _have_aiohttp_transport() -> bool:
    try:
        import httpx_aiohttp  # noqa: F401
    except ImportError:
        return False
    return True


def check_file(path: Path, source: Path | None, *, aiohttp: bool) -> tuple[list[str], list[str]]:
    """Return (problems, notes) for one cassette (one interaction per file)."""
    requests, responses = _load(path)
    if len(requests) != 1:
        return [f"{path}: expected exactly one interaction, found {len(requests)}"], []
    request, response = requests[0], responses[0]
    exp = _expected_from_transcript(source) if source else _expected_from_cassette(response)
    resp, body = _replay_sync(path, request)
    problems = _compare("httpx.Client", exp, resp, body)
    notes: list[str] = []
    if dict(exp.headers).get("content-type", "").startswith("text/event-stream"):
        aresp, abody = asyncio.run(_replay_async(path, request))
        problems += _compare("httpx.AsyncClient aiter_bytes", exp, aresp, abody)
        if aiohttp:
            # Informational: vcrpy's aiohttp stub is a different replay path.
            xresp, xbody = asyncio.run(_replay_aiohttp(path, request))
            notes += _compare("httpx-aiohttp AiohttpTransport", exp, xresp, xbody)
            if not notes:
                notes.append("httpx-aiohttp AiohttpTransport replay matches too")
    return problems, notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", type=Path, default=DEFAULT_PEERS)
    parser.add_argument("--cassettes", type=Path, default=Path("cassettes"))
    parser.add_argument(
        "--no-aiohttp", action="store_true", help="skip the httpx-aiohttp transport replay"
    )
    args = parser.parse_args(argv)
    peers = args.peers if args.peers.is_absolute() else REPO_ROOT / args.peers
    root = args.cassettes if args.cassettes.is_absolute() else REPO_ROOT / args.cassettes
    have_peers = peers.is_dir()
    aiohttp = not args.no_aiohttp and _have_aiohttp_transport()

    sources: dict[Path, Path | None] = {}
    for src_folder, dest_folder in FOLDERS.items():
        for cassette in sorted((root / dest_folder).glob("*.yaml")):
            src = peers / src_folder / f"{cassette.stem}.txt"
            sources[cassette] = src if have_peers else None
        if have_peers:
            for src in sorted((peers / src_folder).glob("*.txt")):
                if (root / dest_folder / f"{src.stem}.yaml") not in sources:
                    print(f"MISSING cassette for {src}", file=sys.stderr)
                    return 1
    for cassette in sorted(root.rglob("*.yaml")):
        sources.setdefault(cassette, None)

    failures = 0
    for cassette, source in sorted(sources.items()):
        if source is not None and not source.is_file():
            print(f"FAIL {cassette}: no transcript {source}")
            failures += 1
            continue
        problems, notes = check_file(cassette, source, aiohttp=aiohttp)
        against = "transcript" if source else "cassette"
        rel = cassette.relative_to(root.parent)
        if problems:
            failures += 1
            print(f"FAIL {rel}")
            for problem in problems:
                print(f"  {problem}")
        else:
            print(f"ok   {rel} (against {against})")
        for note in notes:
            print(f"     {note}")
    total = len(sources)
    print(f"{total - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
