"""What ChatDify and ChatRelay share: settings, LangChain plumbing and message helpers."""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
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

    # The answer as a message: what LangChain's _generate wraps, and what the resilient layer
    # calls directly (it wraps the message itself, so one ChatResult per call, not two).
    def _answer(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> AIMessage:
        raise NotImplementedError

    async def _aanswer(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> AIMessage:
        raise NotImplementedError

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(
            generations=[ChatGeneration(message=self._answer(messages, stop, kwargs))]
        )

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        message = await self._aanswer(messages, stop, kwargs)
        return ChatResult(generations=[ChatGeneration(message=message)])


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
