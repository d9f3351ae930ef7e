"""Per-call settings from ``config["configurable"]`` as well as keyword arguments."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, ClassVar

from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.runnables import RunnableConfig

__all__ = ["ConfigurableChatModel", "pull_configurable"]


def pull_configurable(
    config: RunnableConfig | None, kwargs: dict[str, Any], keys: Sequence[str]
) -> None:
    """Copy ``keys`` from ``config["configurable"]`` into ``kwargs`` (keywords win)."""
    configurable = (config or {}).get("configurable")
    if configurable:
        for key in keys:
            if key in configurable and key not in kwargs:
                kwargs[key] = configurable[key]


class ConfigurableChatModel(BaseChatModel):
    """A chat model whose per-call settings (``_call_keys``) may also come from the config.

    LangChain hands ``config`` to ``invoke`` but not to ``_generate``; chains set per-request
    values (a user id, a conversation id) in ``configurable``. These four entry points move
    them into the call's keyword arguments, where the model reads them.
    """

    _call_keys: ClassVar[tuple[str, ...]] = ()

    def invoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        pull_configurable(config, kwargs, self._call_keys)
        return super().invoke(input, config, stop=stop, **kwargs)

    async def ainvoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        pull_configurable(config, kwargs, self._call_keys)
        return await super().ainvoke(input, config, stop=stop, **kwargs)

    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:
        pull_configurable(config, kwargs, self._call_keys)
        return super().stream(input, config, stop=stop, **kwargs)

    def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        pull_configurable(config, kwargs, self._call_keys)
        return super().astream(input, config, stop=stop, **kwargs)
