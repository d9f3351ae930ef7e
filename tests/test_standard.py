"""LangChain's standard unit tests for ChatDify and ChatRelay (capability flags set honestly)."""

from __future__ import annotations

from typing import Any

from langchain_tests.unit_tests import ChatModelUnitTests

from dify_lc import ChatDify, ChatRelay


class TestChatDifyStandard(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[ChatDify]:
        return ChatDify

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"api_key": "app-test", "base_url": "http://127.0.0.1:5001/v1", "user": "u1"}

    @property
    def has_tool_calling(self) -> bool:
        return False  # a Dify app owns its tools; the service API takes no tool schemas

    @property
    def has_structured_output(self) -> bool:
        return False

    @property
    def returns_usage_metadata(self) -> bool:
        return True

    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        return (
            {"DIFY_API_KEY": "app-from-env", "DIFY_BASE_URL": "http://127.0.0.1:5001/v1"},
            {},
            {"api_key": "app-from-env", "base_url": "http://127.0.0.1:5001/v1"},
        )


class TestChatRelayStandard(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[ChatRelay]:
        return ChatRelay

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": "gpt-4o", "api_key": "sk-test", "base_url": "http://127.0.0.1:4000/v1"}

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def supports_image_urls(self) -> bool:
        return True

    @property
    def returns_usage_metadata(self) -> bool:
        return True

    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        return (
            {"RELAY_API_KEY": "sk-from-env", "RELAY_BASE_URL": "http://127.0.0.1:4000/v1"},
            {"model": "gpt-4o"},
            {"api_key": "sk-from-env", "base_url": "http://127.0.0.1:4000/v1"},
        )
