"""What ChatDify and ChatRelay share: settings, LangChain plumbing and message helpers."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import BaseMessage
from pydantic import ConfigDict

from dify_lc.chat_models._configurable import ConfigurableChatModel
from dify_lc.settings import HTTPSettings

__all__ = ["HTTPChatModel", "last_message_text"]


class HTTPChatModel(HTTPSettings, ConfigurableChatModel):
    """Base of the HTTP chat models; not used directly."""

    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True)

    streaming: bool = False
    """Stream by default when invoked (LangChain's standard flag)."""

    def __init__(self, **data: Any) -> None:
        super().__init__(**data)
        self._setup_http(idempotent=self._is_idempotent())

    def _is_idempotent(self) -> bool:
        return False

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "backend": self.backend}


def last_message_text(message: BaseMessage) -> str:
    """The plain text of a message (text blocks joined; other blocks ignored)."""
    content = message.content
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
    return "".join(parts)
