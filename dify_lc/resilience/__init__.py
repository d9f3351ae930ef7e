"""Resilience policies: pure decisions over state, outcome and an injected clock."""

from dify_lc.resilience.retry import RetryPolicy

__all__ = ["RetryPolicy"]
