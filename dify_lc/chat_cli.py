"""``dify-lc chat``: talk to a Dify app or a relay from the terminal, streaming."""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from dify_lc.errors import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    ConfigurationError,
    DifyLCError,
    RateLimitError,
)

__all__ = ["run_chat"]

_HINTS: list[tuple[type[DifyLCError], str]] = [
    (AuthenticationError, "the API key was refused: check DIFY_API_KEY / RELAY_API_KEY"),
    (RateLimitError, "rate limited: wait a little, or add a fallback route"),
    (APITimeoutError, "no answer in time: is the server up, is the timeout long enough?"),
    (APIConnectionError, "cannot reach the server: check DIFY_BASE_URL / RELAY_BASE_URL"),
]


def _model(config: str | None, relay: bool, model: str | None) -> BaseChatModel:
    if config:
        from dify_lc.config import from_config

        return from_config(config)
    if relay:
        from dify_lc.chat_models import ChatRelay

        return ChatRelay(model=model or os.environ.get("RELAY_MODEL", "gpt-4o"))
    from dify_lc.chat_models import ChatDify

    return ChatDify()


def one_line(err: BaseException) -> str:
    """A one-line explanation of an error, with a hint for the usual causes."""
    hint = next((h for cls, h in _HINTS if isinstance(err, cls)), None)
    text = f"{type(err).__name__}: {err}"
    return f"error: {text}" + (f" — {hint}" if hint else "")


def _turn(
    model: BaseChatModel, history: list[BaseMessage], kwargs: dict[str, Any], out: TextIO
) -> AIMessage:
    start = time.perf_counter()
    first = None
    total: Any = None
    for chunk in model.stream(history, **kwargs):
        if chunk.content and first is None:
            first = time.perf_counter()
        out.write(str(chunk.content))
        out.flush()
        total = chunk if total is None else total + chunk
    elapsed = (time.perf_counter() - start) * 1000
    meta = total.response_metadata if total is not None else {}
    backend = meta.get("route") or meta.get("backend") or type(model).__name__
    ttft = f", first token {(first - start) * 1000:.0f} ms" if first else ""
    out.write(f"\n  [{backend} · {elapsed:.0f} ms{ttft}]\n")
    return AIMessage(content=total.content if total is not None else "", response_metadata=meta)


def run_chat(
    *,
    config: str | None = None,
    relay: bool = False,
    model: str | None = None,
    user: str | None = None,
    message: str | None = None,
    stdin: TextIO = sys.stdin,
    out: TextIO = sys.stdout,
) -> int:
    """Chat once (``message``) or interactively; 0 on success, 1 on an error, 2 on bad setup."""
    try:
        chat_model = _model(config, relay, model)
    except (ConfigurationError, ValueError) as exc:
        print(one_line(exc), file=sys.stderr)
        return 2
    kwargs: dict[str, Any] = {"user": user} if user else {}
    history: list[BaseMessage] = []
    prompts = [message] if message is not None else None
    while True:
        if prompts is not None:
            if not prompts:
                return 0
            text = prompts.pop()
        else:
            out.write("you> ")
            out.flush()
            line = stdin.readline()
            if not line or line.strip() in ("/quit", "/exit"):
                return 0
            text = line.strip()
            if not text:
                continue
        history.append(HumanMessage(text))
        try:
            answer = _turn(chat_model, history, kwargs, out)
        except DifyLCError as exc:
            print(one_line(exc), file=sys.stderr)
            history.pop()
            if prompts is not None:
                return 1
            continue
        history.append(answer)
        conversation = answer.response_metadata.get("conversation_id")
        if conversation:  # Dify keeps the history: continue its conversation
            kwargs["conversation_id"] = conversation
