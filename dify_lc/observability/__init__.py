"""Observability: structured events, redaction, metrics and cost."""

from dify_lc.observability.callbacks import MetricsCallbackHandler
from dify_lc.observability.log import configure_logging
from dify_lc.observability.metrics import Metrics
from dify_lc.observability.prices import Price, PriceTable
from dify_lc.observability.redaction import redact, register_secret

__all__ = [
    "Metrics",
    "MetricsCallbackHandler",
    "Price",
    "PriceTable",
    "configure_logging",
    "redact",
    "register_secret",
]
