"""Typed results of the protocol parsers, shared by Dify and relays (plain slotted dataclasses).

Parsers return these; the LangChain layer turns them into messages. They are deliberately plain
(no validation) because one is built per streamed token on the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from langchain_core.messages.ai import UsageMetadata

__all__ = [
    "AnswerReplaced",
    "NodeEvent",
    "StreamEnd",
    "TextDelta",
    "ToolCallDelta",
    "Usage",
]


@dataclass(slots=True)
class Usage:
    """Token counts and, where the backend reports them, prices (``Decimal``) and latency."""

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    total_price: Decimal | None = None
    currency: str | None = None
    latency: float | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    def to_metadata(self) -> UsageMetadata:
        """LangChain ``usage_metadata`` (tokens only)."""
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(slots=True)
class TextDelta:
    """A piece of answer text (Dify ``message``/``agent_message``/``text_chunk``, relay delta)."""

    text: str


@dataclass(slots=True)
class ToolCallDelta:
    """A fragment of an OpenAI-format tool call in a relay stream."""

    index: int
    id: str | None
    name: str | None
    arguments: str | None


@dataclass(slots=True)
class AnswerReplaced:
    """Dify ``message_replace``: the whole answer so far is replaced (output moderation)."""

    text: str
    reason: str | None


@dataclass(slots=True)
class NodeEvent:
    """A progress event (workflow/node/iteration/agent thought) passed through as is."""

    event: str
    data: dict[str, Any]


@dataclass(slots=True)
class StreamEnd:
    """The result is complete (Dify ``message_end`` / ``workflow_finished``, relay finish/usage)."""

    usage: Usage | None
    finish_reason: str | None
    metadata: dict[str, Any]
