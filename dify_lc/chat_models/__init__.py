"""LangChain chat models over Dify apps and OpenAI-compatible relays."""

from dify_lc.chat_models.dify import ChatDify
from dify_lc.chat_models.relay import ChatRelay

__all__ = ["ChatDify", "ChatRelay"]
