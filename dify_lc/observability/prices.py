"""What a call cost: Dify's own price when it reports one, else a per-model price table."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

__all__ = ["Price", "PriceTable", "cost_of"]


@dataclass(frozen=True, slots=True)
class Price:
    """Price per million input and output tokens."""

    input_per_million: float
    output_per_million: float
    currency: str = "USD"


class PriceTable:
    """Model name → :class:`Price`; empty by default, extend it with your contract's prices.

    Example: ``PriceTable({"gpt-4o": Price(2.5, 10.0)})``.
    """

    def __init__(self, prices: Mapping[str, Price] | None = None) -> None:
        self._prices = dict(prices or {})

    def set(self, model: str, price: Price) -> None:
        self._prices[model] = price

    def get(self, model: str | None) -> Price | None:
        return self._prices.get(model) if model else None


def cost_of(message: Any, table: PriceTable | None) -> tuple[float, str | None]:
    """(cost, currency) of an answer: Dify's ``total_price``, LiteLLM's ``cost``, or the table."""
    meta = getattr(message, "response_metadata", None) or {}
    usage = meta.get("usage")
    if isinstance(usage, Mapping) and usage.get("total_price") is not None:
        price = usage["total_price"]
        return float(price if isinstance(price, Decimal | int | float) else Decimal(str(price))), (
            usage.get("currency") or "USD"
        )
    token_usage = meta.get("token_usage")
    if isinstance(token_usage, Mapping) and isinstance(token_usage.get("cost"), int | float):
        return float(token_usage["cost"]), "USD"
    if table is not None:
        price_entry = table.get(meta.get("model_name"))
        usage_md = getattr(message, "usage_metadata", None)
        if price_entry is not None and usage_md:
            cost = (
                usage_md.get("input_tokens", 0) * price_entry.input_per_million
                + usage_md.get("output_tokens", 0) * price_entry.output_per_million
            ) / 1e6
            return cost, price_entry.currency
    return 0.0, None
