"""DifyClient: the non-generate endpoints of a Dify app (history, conversations, feedback, stop)."""

from __future__ import annotations

import os
from typing import Any, Literal

from dify_lc.errors import ConfigurationError
from dify_lc.observability.redaction import register_secret
from dify_lc.protocol import dify as proto
from dify_lc.settings import check_base_url
from dify_lc.transport import AsyncBackend, Endpoint, Timeouts

__all__ = ["DifyClient"]


class DifyClient:
    """Thin sync + async access to a Dify app's service API beyond generation.

    Every method builds its request with :mod:`dify_lc.protocol.dify` and returns the decoded
    JSON (``None`` for an empty 204). ``a``-prefixed methods are the async twins. Failures
    raise :mod:`dify_lc.errors` types (e.g. ``NotFoundError`` for an unknown conversation).

    Example:
        .. code-block:: python

            client = DifyClient()  # DIFY_API_KEY / DIFY_BASE_URL from env
            history = client.get_messages(conversation_id, user="customer-42")
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeouts: Timeouts | None = None,
        async_backend: AsyncBackend = "aiohttp",
    ) -> None:
        key = api_key or os.environ.get("DIFY_API_KEY")
        if not key:
            raise ConfigurationError(
                "DifyClient needs an API key: pass api_key=... or set DIFY_API_KEY"
            )
        register_secret(key)
        url = base_url or os.environ.get("DIFY_BASE_URL") or "https://api.dify.ai/v1"
        self.endpoint = Endpoint(
            check_base_url(url, env_var="DIFY_BASE_URL"),
            api_key=key,
            backend="dify",
            idempotent=True,  # none of these generate: retrying them is safe
            timeouts=timeouts or Timeouts(),
            async_backend=async_backend,
        )

    def __repr__(self) -> str:
        return f"DifyClient({self.endpoint.base_url!r})"

    def send(self, request: proto.Request) -> Any:
        """Send any request built by :mod:`dify_lc.protocol.dify`."""
        return self.endpoint.request_json(request, deadline=self.endpoint.timeouts.deadline())

    async def asend(self, request: proto.Request) -> Any:
        """Async twin of :meth:`send`."""
        return await self.endpoint.arequest_json(
            request, deadline=self.endpoint.timeouts.deadline()
        )

    # Each pair below is one request builder and the two drivers; no logic lives here.

    def stop(self, task_id: str, *, user: str, kind: proto.AppKind = "chat") -> Any:
        """Stop a streaming task (always ``{"result": "success"}``, even if unknown)."""
        return self.send(proto.stop_request(kind, task_id, user=user))

    async def astop(self, task_id: str, *, user: str, kind: proto.AppKind = "chat") -> Any:
        return await self.asend(proto.stop_request(kind, task_id, user=user))

    def get_messages(self, conversation_id: str, *, user: str, **kw: Any) -> Any:
        """A conversation's messages, oldest first (``first_id``, ``limit`` for paging)."""
        return self.send(proto.get_messages_request(conversation_id, user=user, **kw))

    async def aget_messages(self, conversation_id: str, *, user: str, **kw: Any) -> Any:
        return await self.asend(proto.get_messages_request(conversation_id, user=user, **kw))

    def get_conversations(self, *, user: str, **kw: Any) -> Any:
        """The user's conversations (``last_id``, ``limit``, ``sort_by``)."""
        return self.send(proto.get_conversations_request(user=user, **kw))

    async def aget_conversations(self, *, user: str, **kw: Any) -> Any:
        return await self.asend(proto.get_conversations_request(user=user, **kw))

    def delete_conversation(self, conversation_id: str, *, user: str) -> Any:
        """Delete a conversation (200 JSON or 204 empty, depending on the Dify version)."""
        return self.send(proto.delete_conversation_request(conversation_id, user=user))

    async def adelete_conversation(self, conversation_id: str, *, user: str) -> Any:
        return await self.asend(proto.delete_conversation_request(conversation_id, user=user))

    def rename_conversation(self, conversation_id: str, *, user: str, **kw: Any) -> Any:
        """Rename a conversation (``name=`` or ``auto_generate=True``)."""
        return self.send(proto.rename_conversation_request(conversation_id, user=user, **kw))

    async def arename_conversation(self, conversation_id: str, *, user: str, **kw: Any) -> Any:
        return await self.asend(proto.rename_conversation_request(conversation_id, user=user, **kw))

    def feedback(
        self,
        message_id: str,
        *,
        user: str,
        rating: Literal["like", "dislike"] | None,
        content: str | None = None,
    ) -> Any:
        """Rate a message (``rating=None`` withdraws the rating)."""
        return self.send(
            proto.feedback_request(message_id, user=user, rating=rating, content=content)
        )

    async def afeedback(
        self,
        message_id: str,
        *,
        user: str,
        rating: Literal["like", "dislike"] | None,
        content: str | None = None,
    ) -> Any:
        return await self.asend(
            proto.feedback_request(message_id, user=user, rating=rating, content=content)
        )

    def get_suggested(self, message_id: str, *, user: str) -> Any:
        """Suggested follow-up questions for a message."""
        return self.send(proto.get_suggested_request(message_id, user=user))

    async def aget_suggested(self, message_id: str, *, user: str) -> Any:
        return await self.asend(proto.get_suggested_request(message_id, user=user))

    def get_parameters(self) -> Any:
        """The app's input form, opening statement and feature switches."""
        return self.send(proto.get_parameters_request())

    async def aget_parameters(self) -> Any:
        return await self.asend(proto.get_parameters_request())

    def close(self) -> None:
        self.endpoint.close()

    async def aclose(self) -> None:
        await self.endpoint.aclose()
