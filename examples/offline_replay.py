"""Offline tour of dify-lc: replays HTTP exchanges recorded from a real Dify 0.15.3 server and a
real LiteLLM proxy (``cassettes/``), so it needs no API key and no network.

    pip install '.[examples]' && python examples/offline_replay.py

What it shows: ChatDify in an LCEL chain (prompt | model | parser), token streaming with
usage and Dify metadata, a bad key turned into a typed error, and ChatRelay over an
OpenAI-compatible relay. Swap the replay for real endpoints by setting DIFY_API_KEY /
DIFY_BASE_URL (and RELAY_API_KEY / RELAY_BASE_URL) and dropping the ``replay`` blocks.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import vcr
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from dify_lc import AuthenticationError, ChatDify, ChatRelay

CASSETTES = Path(__file__).resolve().parent.parent / "cassettes"
# The recordings were made on these loopback addresses; the replay answers them offline.
DIFY_URL = "http://127.0.0.1:5001/v1"
RELAY_URL = "http://127.0.0.1:4000/v1"


@contextmanager
def replay(name: str) -> Iterator[None]:
    """Serve HTTP from a recorded cassette; anything not recorded fails instead of going out."""
    with vcr.VCR(record_mode="none").use_cassette(str(CASSETTES / f"{name}.yaml")):
        yield


def main() -> int:
    dify = ChatDify(api_key="app-offline-demo", base_url=DIFY_URL, user="peer-user-1")
    chain = ChatPromptTemplate.from_messages([("human", "{question}")]) | dify | StrOutputParser()

    print("1. ChatDify in an LCEL chain, streaming token by token:")
    with replay("dify/s02-chat-streaming"):
        for token in chain.stream({"question": "Stream please"}):
            print(token, end="|", flush=True)
    print()

    print("\n2. invoke: the answer, Dify's metadata and LangChain usage:")
    with replay("dify/s01-chat-blocking"):
        message = dify.invoke("Hello there", response_mode="blocking")
    meta = message.response_metadata
    print(f"   answer          : {message.content}")
    print(f"   conversation_id : {meta['conversation_id']}  (pass it back to continue)")
    print(f"   usage           : {message.usage_metadata}")
    print(f"   price           : {meta['usage']['total_price']} {meta['usage']['currency']}")

    print("\n3. A wrong key becomes a typed error, with no secret in its text:")
    with replay("dify/e01-bad-key-401"):
        try:
            dify.invoke("hi")
        except AuthenticationError as err:
            print(f"   {type(err).__name__}: {err}")
            print(f"   retryable={err.retryable} fall back={err.allows_fallback}")

    print("\n4. ChatRelay over an OpenAI-compatible relay (LiteLLM), streaming with usage:")
    relay = ChatRelay(model="gpt-4o", api_key="sk-offline-demo", base_url=RELAY_URL)
    with replay("relay/03-chat-stream-include-usage"):
        total = None
        for chunk in relay.stream("Say hi"):
            total = chunk if total is None else total + chunk
    assert total is not None
    print(f"   {total.content}")
    print(f"   usage: {total.usage_metadata}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
