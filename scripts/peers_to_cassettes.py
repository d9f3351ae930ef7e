"""Convert the recorded peer wire transcripts into vcrpy cassettes.

Usage::

    python scripts/peers_to_cassettes.py [--peers ../shared/peers] [--out cassettes]

``--peers`` defaults to ``../shared/peers`` and ``--out`` to ``cassettes``, both resolved
relative to the repository root (the parent of this ``scripts/`` folder), so the script can be
run from anywhere.

Each transcript ``<peers>/dify/<stem>.txt`` becomes ``<out>/dify/<stem>.yaml`` and each
``<peers>/litellm/<stem>.txt`` becomes ``<out>/relay/<stem>.yaml``: one vcrpy (format version 1)
cassette holding exactly one interaction, in the shape that vcrpy's httpx stub replays.

What is kept and what is changed:

* Response status code, reason phrase, headers (original case and order) and body are kept byte
  for byte, except that the ``Transfer-Encoding`` response header is dropped: the transcripts
  hold de-chunked bodies, and a replayed response is a plain in-memory byte stream.
* The recorder's one trailing ``\\n`` after each body is stripped; where a ``Content-Length``
  header is present the body length is asserted to equal it.
* The request keeps method, URI (``http://<Host><path>``), headers and body, but the
  ``Authorization``, ``x-api-key``, ``api-key`` and ``Cookie`` headers are removed entirely:
  cassettes never store credentials, not even redacted placeholders.
* Every cassette is loaded back through vcrpy's own YAML loader and compared with the
  transcript, so a body that YAML would not round-trip exactly fails the conversion.

Only the standard library and PyYAML are needed (vcrpy is used for the round-trip check when
it is importable; otherwise a safe YAML load is used).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PEERS = Path("..") / "shared" / "peers"
DEFAULT_OUT = Path("cassettes")

# peers sub-folder -> cassettes sub-folder
FOLDERS = {"dify": "dify", "litellm": "relay"}

SECRET_REQUEST_HEADERS = frozenset({"authorization", "x-api-key", "api-key", "cookie"})
DROPPED_RESPONSE_HEADERS = frozenset({"transfer-encoding"})

REQUEST_MARK = b">>> REQUEST\n"
RESPONSE_MARK = b"\n<<< RESPONSE\n"


class TranscriptError(ValueError):
    """A transcript does not have the documented shape."""


@dataclass
class Message:
    start_line: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


@dataclass
class Transcript:
    path: Path
    comments: list[str]
    request: Message
    response: Message


def _split_head(block: bytes, where: str) -> tuple[str, list[tuple[str, str]], bytes]:
    """Split ``start-line\\nheaders\\n\\nrest`` into its parts."""
    end = block.find(b"\n\n")
    if end < 0:
        raise TranscriptError(f"{where}: no blank line after the headers")
    head = block[:end].decode("latin-1").split("\n")
    rest = block[end + 2 :]
    headers: list[tuple[str, str]] = []
    for line in head[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise TranscriptError(f"{where}: bad header line {line!r}")
        headers.append((name, value.strip(" \t")))
    return head[0], headers, rest


def _body_with_length(raw: bytes, length: str | None, where: str, *, trailer: bool) -> bytes:
    """Return the body from ``raw`` = body + the recorder's ``\\n`` (if ``trailer``)."""
    if trailer:
        if not raw.endswith(b"\n"):
            raise TranscriptError(f"{where}: body does not end with the recorder's newline")
        body = raw[:-1]
    else:
        body = raw
    if length is not None and len(body) != int(length):
        raise TranscriptError(
            f"{where}: body is {len(body)} bytes but Content-Length says {length}",
        )
    return body


def parse_transcript(path: Path) -> Transcript:
    data = path.read_bytes()
    if b"\r" in data:
        raise TranscriptError(f"{path}: unexpected CR (transcripts have CRs stripped)")
    if data.count(REQUEST_MARK) != 1 or data.count(RESPONSE_MARK) != 1:
        raise TranscriptError(f"{path}: expected exactly one request and one response")

    req_at = data.index(REQUEST_MARK)
    comments = [
        line[1:].strip()
        for line in data[:req_at].decode("utf-8").splitlines()
        if line.startswith("#")
    ]
    resp_at = data.index(RESPONSE_MARK)

    # Request: "<line>\n<headers>\n\n<body>[\n]" followed by "\n<<< RESPONSE\n".
    # The recorder's newline follows a non-empty request body; an empty one has none.
    start, headers, raw = _split_head(data[req_at + len(REQUEST_MARK) : resp_at + 1], f"{path}")
    request = Message(start, headers)
    raw = raw[:-1]  # the "\n" that starts "\n<<< RESPONSE" is the separator line
    length = request.header("Content-Length")
    if raw == b"":
        request.body = _body_with_length(raw, length, f"{path} request", trailer=False)
    else:
        request.body = _body_with_length(raw, length, f"{path} request", trailer=True)

    # Response: "<status line>\n<headers>\n\n<body>\n" up to the end of the file.
    start, headers, raw = _split_head(data[resp_at + len(RESPONSE_MARK) :], f"{path} response")
    response = Message(start, headers)
    response.body = _body_with_length(
        raw, response.header("Content-Length"), f"{path} response", trailer=True
    )
    return Transcript(path, comments, request, response)


def _grouped(headers: list[tuple[str, str]], drop: frozenset[str]) -> dict[str, list[str]]:
    """Headers as ``{name: [values]}``, keeping the first spelling and the order seen."""
    out: dict[str, list[str]] = {}
    spelling: dict[str, str] = {}
    for name, value in headers:
        low = name.lower()
        if low in drop:
            continue
        key = spelling.setdefault(low, name)
        out.setdefault(key, []).append(value)
    return out


def _text_or_bytes(body: bytes) -> str | bytes:
    """Bodies are stored as text (vcrpy encodes them back with UTF-8) unless not UTF-8."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return body


def to_interaction(t: Transcript) -> dict[str, Any]:
    method, target, _version = t.request.start_line.split(" ", 2)
    host = t.request.header("Host")
    if not host:
        raise TranscriptError(f"{t.path}: request has no Host header")
    if not target.startswith("/"):
        raise TranscriptError(f"{t.path}: request target {target!r} is not origin-form")
    version, code, *reason = t.response.start_line.split(" ", 2)
    if not version.startswith("HTTP/"):
        raise TranscriptError(f"{t.path}: bad status line {t.response.start_line!r}")
    return {
        "request": {
            "method": method,
            "uri": f"http://{host}{target}",
            "body": _text_or_bytes(t.request.body),
            "headers": _grouped(t.request.headers, SECRET_REQUEST_HEADERS),
        },
        "response": {
            "status": {"code": int(code), "message": reason[0] if reason else ""},
            "headers": _grouped(t.response.headers, DROPPED_RESPONSE_HEADERS),
            "body": {"string": _text_or_bytes(t.response.body)},
        },
    }


class _CassetteDumper(yaml.SafeDumper):
    """Safe dumper that writes multi-line strings as literal blocks where YAML allows it.

    PyYAML falls back to a double-quoted scalar by itself when a literal block cannot hold the
    string exactly (trailing spaces, control characters, ...). Either way the round trip is
    checked after writing.
    """


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_CassetteDumper.add_representer(str, _represent_str)


def dump_yaml(data: Any) -> str:
    """YAML text for a cassette dict: key order kept, literal blocks, no line folding."""
    return yaml.dump(
        data,
        Dumper=_CassetteDumper,
        sort_keys=False,
        allow_unicode=True,
        width=1 << 20,
        default_flow_style=False,
    )


def dump_cassette(interactions: list[dict[str, Any]], header_lines: list[str]) -> str:
    text = dump_yaml({"version": 1, "interactions": interactions})
    comment = "".join(f"# {line}".rstrip() + "\n" for line in header_lines)
    return comment + text


def load_like_vcr(text: str) -> tuple[list[Any], list[dict[str, Any]]]:
    """Load cassette text the way vcrpy does (requests, responses with bytes bodies)."""
    try:
        from vcr.serialize import deserialize
        from vcr.serializers import yamlserializer
    except ImportError:  # vcrpy not installed: emulate its safe load + utf-8 encoding
        data = yaml.safe_load(text)
        responses = []
        for item in data["interactions"]:
            resp = item["response"]
            if isinstance(resp["body"]["string"], str):
                resp["body"]["string"] = resp["body"]["string"].encode("utf-8")
            responses.append(resp)
        return [i["request"] for i in data["interactions"]], responses
    return deserialize(text, yamlserializer)


def _as_bytes(value: str | bytes | None) -> bytes:
    if value is None:
        return b""
    return value.encode("utf-8") if isinstance(value, str) else value


def verify_round_trip(text: str, t: Transcript, interaction: dict[str, Any]) -> None:
    requests, responses = load_like_vcr(text)
    if len(requests) != 1 or len(responses) != 1:
        raise AssertionError(f"{t.path}: expected one interaction after loading")
    resp = responses[0]
    if resp["body"]["string"] != t.response.body:
        raise AssertionError(f"{t.path}: response body does not round-trip through YAML")
    if resp["status"] != interaction["response"]["status"]:
        raise AssertionError(f"{t.path}: status does not round-trip")
    if resp["headers"] != interaction["response"]["headers"]:
        raise AssertionError(f"{t.path}: response headers do not round-trip")
    req = requests[0]
    req_body = req.body if hasattr(req, "body") else req["body"]
    if _as_bytes(req_body) != t.request.body:
        raise AssertionError(f"{t.path}: request body does not round-trip")
    req_headers = req.headers if hasattr(req, "headers") else req["headers"]
    for name in req_headers:
        if name.lower() in SECRET_REQUEST_HEADERS:
            raise AssertionError(f"{t.path}: secret header {name} left in the cassette")


def convert_file(src: Path, dest: Path, peers_root: Path) -> dict[str, Any]:
    t = parse_transcript(src)
    interaction = to_interaction(t)
    rel = src.relative_to(peers_root).as_posix()
    header = [
        f"Converted from peers transcript {rel} by scripts/peers_to_cassettes.py.",
        *t.comments,
        "Do not edit by hand: regenerate with `python scripts/peers_to_cassettes.py`.",
        "Authorization / x-api-key / Cookie request headers are removed (never stored);",
        "the Transfer-Encoding response header is dropped (bodies are stored de-chunked).",
    ]
    text = dump_cassette([interaction], header)
    verify_round_trip(text, t, interaction)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text, encoding="utf-8")
    return interaction


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--peers",
        type=Path,
        default=DEFAULT_PEERS,
        help="folder with dify/ and litellm/ transcripts (relative paths: from the repo root)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="cassettes folder (relative paths: from the repo root)",
    )
    args = parser.parse_args(argv)
    peers = args.peers if args.peers.is_absolute() else (REPO_ROOT / args.peers)
    out = args.out if args.out.is_absolute() else (REPO_ROOT / args.out)
    peers = peers.resolve()
    if not peers.is_dir():
        print(f"peers folder not found: {peers}", file=sys.stderr)
        return 2

    count = 0
    for src_folder, dest_folder in FOLDERS.items():
        sources = sorted((peers / src_folder).glob("*.txt"))
        if not sources:
            print(f"no transcripts in {peers / src_folder}", file=sys.stderr)
            return 2
        for src in sources:
            dest = out / dest_folder / f"{src.stem}.yaml"
            interaction = convert_file(src, dest, peers)
            status = interaction["response"]["status"]
            print(f"{dest.relative_to(out.parent)}  {status['code']} {status['message']}")
            count += 1
    print(f"wrote {count} cassettes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
