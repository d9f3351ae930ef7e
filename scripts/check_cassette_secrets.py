"""Fail if any file under cassettes/ holds a credential.

Usage::

    python scripts/check_cassette_secrets.py [--root cassettes] [--secret VALUE ...]

Reports ``file:line: reason`` for every hit and exits 1 if there is one (0 if clean). It looks
for:

* a header named ``Authorization``, ``x-api-key``, ``api-key`` or ``Cookie`` (any case), both as
  a YAML mapping key on any line and, for cassettes that parse, in every interaction's request
  and response headers;
* strings that look like keys: ``sk-`` followed by 16 or more of ``[A-Za-z0-9_-]`` (OpenAI /
  LiteLLM style) and ``app-`` followed by 16 or more of ``[A-Za-z0-9]`` (Dify app keys);
* every literal given with ``--secret`` and the value of the ``LITELLM_MASTER_KEY`` environment
  variable when it is set (the recording script passes the master key it used).

Only the standard library and PyYAML are needed.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent

SECRET_HEADER_NAMES = frozenset({"authorization", "x-api-key", "api-key", "cookie"})

# A header name as a YAML (or JSON) mapping key: `  Authorization:`, `- 'x-api-key':`,
# `{"Cookie": ...}`, `..., api-key: ...`.
HEADER_KEY_RE = re.compile(
    r"""(?:^|[{,])\s*(?:-\s*)?["']?(authorization|x-api-key|api-key|cookie)["']?\s*:""",
    re.IGNORECASE,
)
# The lookbehind keeps words such as "task-..." or "webapp-..." from matching.
KEY_RES = (
    ("OpenAI/LiteLLM-style key", re.compile(r"(?<![A-Za-z0-9])sk-[A-Za-z0-9_-]{16,}")),
    ("Dify app key", re.compile(r"(?<![A-Za-z0-9])app-[A-Za-z0-9]{16,}")),
)


def _line_of(text: str, needle: str) -> int:
    at = text.find(needle)
    return text.count("\n", 0, at) + 1 if at >= 0 else 1


def scan_text(path: Path, text: str, literals: Iterable[str]) -> list[str]:
    hits = []
    for number, line in enumerate(text.splitlines(), start=1):
        for match in HEADER_KEY_RE.finditer(line):
            hits.append(f"{path}:{number}: header {match.group(1)!r}")
        for reason, pattern in KEY_RES:
            for found in pattern.finditer(line):
                hits.append(f"{path}:{number}: {reason} {found.group(0)[:8]}...")
        for literal in literals:
            if literal in line:
                hits.append(f"{path}:{number}: the given secret (LITELLM_MASTER_KEY / --secret)")
    return hits


def _header_names(headers: object) -> list[str]:
    if isinstance(headers, dict):
        return [str(name) for name in headers]
    if isinstance(headers, list):  # [[name, value], ...] style
        return [str(item[0]) for item in headers if isinstance(item, list | tuple) and item]
    return []


def scan_cassette_structure(path: Path, text: str) -> list[str]:
    """Check the parsed headers too (catches flow-style YAML the line scan might miss)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return []
    if not isinstance(data, dict) or not isinstance(data.get("interactions"), list):
        return []
    hits = []
    for index, interaction in enumerate(data["interactions"]):
        if not isinstance(interaction, dict):
            continue
        for side in ("request", "response"):
            part = interaction.get(side)
            if not isinstance(part, dict):
                continue
            for name in _header_names(part.get("headers")):
                if name.lower() in SECRET_HEADER_NAMES:
                    line = _line_of(text, name)
                    hits.append(
                        f"{path}:{line}: interactions[{index}].{side} has header {name!r}",
                    )
    return hits


def scan_root(root: Path, literals: Iterable[str]) -> list[str]:
    literals = [s for s in literals if s]
    hits: list[str] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        raw = path.read_bytes()
        text = raw.decode("utf-8", errors="replace")
        shown = path.relative_to(root.parent) if root.parent in path.parents else path
        line_hits = scan_text(shown, text, literals)
        hits += line_hits
        if path.suffix in {".yaml", ".yml"} and not any(": header " in h for h in line_hits):
            hits += scan_cassette_structure(shown, text)
    return hits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("cassettes"))
    parser.add_argument("--secret", action="append", default=[], help="literal to look for")
    args = parser.parse_args(argv)
    root = args.root if args.root.is_absolute() else REPO_ROOT / args.root
    if not root.is_dir():
        print(f"no such folder: {root}", file=sys.stderr)
        return 2
    literals = list(args.secret)
    env_key = os.environ.get("LITELLM_MASTER_KEY", "")
    if len(env_key) >= 8:
        literals.append(env_key)
    hits = scan_root(root, literals)
    for hit in hits:
        print(hit)
    files = sum(1 for p in root.rglob("*") if p.is_file())
    if hits:
        print(f"{len(hits)} secret hit(s) in {root}", file=sys.stderr)
        return 1
    print(f"no secrets found in {files} files under {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
