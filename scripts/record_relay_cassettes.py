"""Record relay cassettes against a real LiteLLM proxy with mocked models.

Usage::

    # starts its own proxy (litellm installed in a separate venv, never the project's):
    python scripts/record_relay_cassettes.py [--litellm ../litellm-venv/bin/litellm]

    # or records against a proxy that is already running with scripts/litellm_config.yaml:
    LITELLM_MASTER_KEY=... python scripts/record_relay_cassettes.py --base-url http://127.0.0.1:4000

Without ``--base-url`` the script starts ``litellm --config scripts/litellm_config.yaml`` bound to
127.0.0.1 on a free port, with a fresh random master key (unless ``LITELLM_MASTER_KEY`` is set),
waits until it is live, records, and stops it again. Every request goes to loopback only; the
models are mocked inside the proxy.

Each scenario is recorded with vcrpy (``record_mode="all"``) through plain ``httpx.Client`` into
``cassettes/relay_litellm/<name>.yaml``, one interaction per file. Then each cassette is
rewritten: the request URI becomes ``http://127.0.0.1:4000/v1/chat/completions`` (and the
``Host`` header ``127.0.0.1:4000``) so replays do not depend on the port used, the
``Transfer-Encoding`` response header is dropped (bodies are stored de-chunked), and a comment
naming the scenario and the LiteLLM version is put on top. Credentials never reach a cassette:
vcrpy's ``filter_headers`` drops ``Authorization``/``x-api-key``/``api-key``/``Cookie``, a
``before_record_response`` hook removes any header or body text equal to the master key, and
finally ``check_cassette_secrets.py`` scans the whole ``cassettes/`` tree, including for the key
itself. Needs vcrpy, httpx and PyYAML (the project's dev venv).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import vcr
import yaml
from vcr.serializers import yamlserializer

sys.path.insert(0, str(Path(__file__).resolve().parent))

from check_cassette_secrets import scan_root
from peers_to_cassettes import dump_cassette, dump_yaml, load_like_vcr

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "scripts" / "litellm_config.yaml"
DEFAULT_OUT = REPO_ROOT / "cassettes" / "relay_litellm"
FIXED_BASE = "http://127.0.0.1:4000"
CHAT_PATH = "/v1/chat/completions"
FILTERED_HEADERS = ["authorization", "x-api-key", "api-key", "cookie"]
DROPPED_RESPONSE_HEADERS = frozenset({"transfer-encoding"})

# Keep litellm from reaching out to the internet at start-up (it would otherwise fetch its model
# cost map and a few other JSON files from GitHub) and from reading a .env file.
PROXY_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOCAL_POLICY_TEMPLATES": "True",
    "LITELLM_LOCAL_BLOG_POSTS": "True",
    "LITELLM_LOCAL_AUTOROUTER_PRESETS": "True",
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
    "LITELLM_MODE": "PRODUCTION",
    "DISABLE_ADMIN_UI": "True",
}

# A deliberately wrong key: short enough not to look like a real one to the secret scanner.
WRONG_KEY = "sk-wrong"

USER = {"role": "user", "content": "Say hi"}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@dataclass
class Scenario:
    name: str
    description: str
    body: dict[str, Any]
    auth: str = "master"  # "master", "wrong" or "none"
    expect: int = 200
    # Requests sent (and not recorded) before the recorded one, e.g. to use up a rate limit.
    warmup: int = 0
    warmup_body: dict[str, Any] | None = None


SCENARIOS = [
    Scenario(
        "01-chat-blocking",
        "blocking chat completion (gpt-4o)",
        {"model": "gpt-4o", "messages": [USER], "stream": False},
    ),
    Scenario(
        "02-chat-stream",
        "streaming chat completion, no stream_options",
        {"model": "gpt-4o", "messages": [USER], "stream": True},
    ),
    Scenario(
        "03-chat-stream-include-usage",
        "streaming with stream_options.include_usage (usage chunk before [DONE])",
        {
            "model": "gpt-4o",
            "messages": [USER],
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    ),
    Scenario(
        "04-multi-turn-system",
        "blocking, system + user + assistant + user messages",
        {
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "You are a terse assistant."},
                {"role": "user", "content": "Hello there"},
                {"role": "assistant", "content": "Hi! How can I help?"},
                {"role": "user", "content": "Tell me a fact about Paris."},
            ],
            "stream": False,
        },
    ),
    Scenario(
        "05-sampling-params",
        "blocking with temperature, max_tokens and stop",
        {
            "model": "gpt-4o",
            "messages": [USER],
            "stream": False,
            "temperature": 0.2,
            "max_tokens": 64,
            "stop": ["\n\n", "END"],
        },
    ),
    Scenario(
        "06-claude-blocking",
        "blocking chat completion (claude-sonnet alias)",
        {"model": "claude-sonnet", "messages": [USER], "stream": False},
    ),
    Scenario(
        "07-wrong-key",
        "wrong bearer key (no database, so the virtual-key lookup fails)",
        {"model": "gpt-4o", "messages": [USER], "stream": False},
        auth="wrong",
        expect=400,
    ),
    Scenario(
        "08-no-key",
        "no Authorization header",
        {"model": "gpt-4o", "messages": [USER], "stream": False},
        auth="none",
        expect=401,
    ),
    Scenario(
        "09-rpm-limit-429",
        "3rd request within a minute to gpt-4o-limited (deployment rpm 2, router-enforced)",
        {"model": "gpt-4o-limited", "messages": [USER], "stream": False},
        expect=429,
        warmup=2,
    ),
    Scenario(
        "10-rpm-limit-429-stream",
        "streaming request to the exhausted gpt-4o-limited (plain HTTP error, no SSE)",
        {"model": "gpt-4o-limited", "messages": [USER], "stream": True},
        expect=429,
    ),
    Scenario(
        "11-upstream-429-mock",
        "model always-429: the provider's RateLimitError relayed as 429",
        {"model": "always-429", "messages": [USER], "stream": False},
        expect=429,
    ),
    Scenario(
        "12-unknown-model",
        "unknown model name",
        {"model": "no-such-model", "messages": [USER], "stream": False},
        expect=400,
    ),
    Scenario(
        "13-tool-call-blocking",
        "blocking reply with one tool call (gpt-4o-tools, mocked)",
        {
            "model": "gpt-4o-tools",
            "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
            "tools": [WEATHER_TOOL],
            "tool_choice": "auto",
            "stream": False,
        },
    ),
]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_litellm(explicit: str | None) -> str:
    candidates = [
        explicit,
        os.environ.get("LITELLM_BIN"),
        str(REPO_ROOT.parent / "litellm-venv" / "bin" / "litellm"),
        shutil.which("litellm"),
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    raise SystemExit(
        "litellm not found: install it in its own venv "
        "(python3 -m venv ../litellm-venv && ../litellm-venv/bin/pip install "
        "'litellm[proxy]==1.106.2' 'prisma==0.15.0') or pass --litellm / --base-url",
    )


class Proxy:
    """A LiteLLM proxy child process bound to 127.0.0.1."""

    def __init__(self, litellm: str, config: Path, port: int, key: str, log: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL"}}
        env.update(PROXY_ENV)
        env["LITELLM_MASTER_KEY"] = key
        self.base_url = f"http://127.0.0.1:{port}"
        self.log = log
        self._log_file = log.open("wb")
        self.process = subprocess.Popen(
            [litellm, "--config", str(config), "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"litellm exited with {self.process.returncode}; see {self.log}")
            try:
                if httpx.get(f"{self.base_url}/health/liveliness", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise SystemExit(f"litellm did not become ready in {timeout:.0f}s; see {self.log}")

    def stop(self) -> None:
        if self.process.poll() is None:
            # The proxy was started in its own session: signal exactly that process group.
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._log_file.close()


def proxy_version(base_url: str, key: str) -> str:
    """The x-litellm-version header of a (mocked, free) chat completion."""
    with httpx.Client(timeout=60) as client:
        resp = client.post(
            f"{base_url}{CHAT_PATH}",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "gpt-4o", "messages": [USER]},
        )
    if resp.status_code != 200:
        raise SystemExit(f"proxy smoke request failed: HTTP {resp.status_code} {resp.text[:300]}")
    return resp.headers.get("x-litellm-version", "unknown")


def make_scrubber(key: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    key_bytes = key.encode()

    def scrub(response: dict[str, Any]) -> dict[str, Any]:
        headers = response.get("headers", {})
        for name in list(headers):
            if name.lower() in FILTERED_HEADERS or any(key in v for v in headers[name]):
                del headers[name]
        body = response.get("body", {}).get("string")
        if isinstance(body, bytes) and key_bytes in body:
            body = body.replace(key_bytes, b"")
            response["body"]["string"] = body
            for name in list(headers):
                if name.lower() == "content-length":
                    headers[name] = [str(len(body))]
        return response

    return scrub


def make_request_scrubber(key: str) -> Callable[[Any], Any]:
    def scrub(request: Any) -> Any:
        for name in list(request.headers):
            if key in str(request.headers[name]):
                del request.headers[name]
        if isinstance(request.body, bytes) and key.encode() in request.body:
            request.body = request.body.replace(key.encode(), b"")
        return request

    return scrub


class OrderedYamlSerializer:
    """vcrpy's YAML serializer, but keeping the header order the server sent."""

    @staticmethod
    def serialize(cassette_dict: dict[str, Any]) -> str:
        return dump_yaml(cassette_dict)

    @staticmethod
    def deserialize(cassette_string: str) -> Any:
        return yamlserializer.deserialize(cassette_string)


def _auth_headers(auth: str, key: str) -> dict[str, str]:
    headers = {"Accept": "application/json", "Content-Type": "application/json"}
    if auth == "master":
        headers["Authorization"] = f"Bearer {key}"
    elif auth == "wrong":
        headers["Authorization"] = f"Bearer {WRONG_KEY}"
    return headers


def _send(client: httpx.Client, url: str, scenario: Scenario, key: str, body: dict[str, Any]):
    return client.post(url, headers=_auth_headers(scenario.auth, key), json=body)


def record_scenario(scenario: Scenario, base_url: str, key: str, out: Path) -> int:
    path = out / f"{scenario.name}.yaml"
    path.unlink(missing_ok=True)  # "all" mode would keep unmatched old interactions
    url = f"{base_url}{CHAT_PATH}"
    with httpx.Client(timeout=60) as client:
        for _ in range(scenario.warmup):
            _send(client, url, scenario, key, scenario.warmup_body or scenario.body)
        recorder = vcr.VCR(
            record_mode="all",
            filter_headers=FILTERED_HEADERS,
            before_record_request=make_request_scrubber(key),
            before_record_response=make_scrubber(key),
            decode_compressed_response=True,
            serializer="ordered_yaml",
        )
        recorder.register_serializer("ordered_yaml", OrderedYamlSerializer)
        with recorder.use_cassette(str(path)) as cassette:
            resp = _send(client, url, scenario, key, scenario.body)
            resp.read()
            recorded = len(cassette.data)
    if resp.status_code != scenario.expect:
        raise SystemExit(
            f"{scenario.name}: expected HTTP {scenario.expect}, got {resp.status_code}: "
            f"{resp.text[:300]}",
        )
    if recorded != 1:
        raise SystemExit(f"{scenario.name}: expected one recorded interaction, got {recorded}")
    return resp.status_code


def rewrite_cassette(path: Path, scenario: Scenario, version: str, key: str) -> None:
    """Fix the host, drop noise headers, add the comment; check the bodies survive exactly."""
    original_text = path.read_text(encoding="utf-8")
    _, before = load_like_vcr(original_text)
    data = yaml.safe_load(original_text)
    for item in data["interactions"]:
        request = item["request"]
        request["uri"] = f"{FIXED_BASE}{CHAT_PATH}"
        for name in list(request["headers"]):
            if name.lower() == "host":
                request["headers"][name] = [FIXED_BASE.removeprefix("http://")]
        response = item["response"]
        for name in list(response["headers"]):
            if name.lower() in DROPPED_RESPONSE_HEADERS:
                del response["headers"][name]
        # Stable key order: request (method, uri, body, headers), response (status, headers, body).
        item["request"] = {k: request[k] for k in ("method", "uri", "body", "headers")}
        item["response"] = {k: response[k] for k in ("status", "headers", "body")}
    header = [
        f"Recorded by scripts/record_relay_cassettes.py from a real LiteLLM {version} proxy",
        "(scripts/litellm_config.yaml, mocked models, master key only, no database).",
        f"Scenario {scenario.name}: {scenario.description}.",
        "Request URI/Host rewritten to 127.0.0.1:4000; Transfer-Encoding dropped (de-chunked).",
        "Authorization / x-api-key / Cookie request headers are removed (never stored).",
    ]
    text = dump_cassette(data["interactions"], header)
    if key in text:
        raise SystemExit(f"{path}: master key still present after rewrite")
    requests, after = load_like_vcr(text)
    for old, new in zip(before, after, strict=True):
        if old["body"]["string"] != new["body"]["string"] or old["status"] != new["status"]:
            raise SystemExit(f"{path}: response does not survive the rewrite byte for byte")
    for request in requests:
        if request.uri != f"{FIXED_BASE}{CHAT_PATH}":
            raise SystemExit(f"{path}: URI rewrite failed")
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", help="use a running proxy instead of starting one")
    parser.add_argument("--litellm", help="litellm executable (default: ../litellm-venv, PATH)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--port", type=int, default=0, help="port for the started proxy")
    parser.add_argument("--startup-timeout", type=float, default=180.0)
    parser.add_argument(
        "--only", action="append", default=[], help="record only these scenario names"
    )
    args = parser.parse_args(argv)

    key = os.environ.get("LITELLM_MASTER_KEY") or f"sk-{secrets.token_urlsafe(24)}"
    if args.base_url and not os.environ.get("LITELLM_MASTER_KEY"):
        raise SystemExit("--base-url needs LITELLM_MASTER_KEY set to that proxy's master key")
    out = args.out if args.out.is_absolute() else REPO_ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    scenarios = [s for s in SCENARIOS if not args.only or s.name in args.only]

    proxy: Proxy | None = None
    try:
        if args.base_url:
            base_url = args.base_url.rstrip("/")
        else:
            litellm = find_litellm(args.litellm)
            log = Path(tempfile.gettempdir()) / "record_relay_cassettes.litellm.log"
            port = args.port or free_port()
            print(f"starting {litellm} on 127.0.0.1:{port} (log: {log})")
            proxy = Proxy(litellm, args.config.resolve(), port, key, log)
            proxy.wait_ready(args.startup_timeout)
            base_url = proxy.base_url
        version = proxy_version(base_url, key)
        print(f"LiteLLM {version} at {base_url}")
        for scenario in scenarios:
            status = record_scenario(scenario, base_url, key, out)
            rewrite_cassette(out / f"{scenario.name}.yaml", scenario, version, key)
            print(f"{(out / scenario.name).relative_to(REPO_ROOT)}.yaml  {status}")
    finally:
        if proxy is not None:
            proxy.stop()
            print("proxy stopped")

    hits = scan_root(out.parent, [key])
    for hit in hits:
        print(hit, file=sys.stderr)
    if hits:
        print("secret scan FAILED", file=sys.stderr)
        return 1
    print(f"recorded {len(scenarios)} cassettes; secret scan clean")
    return 0


if __name__ == "__main__":
    sys.exit(main())
