"""dify-lc: LangChain chat models for Dify apps and OpenAI-compatible relays that survive outages.

Public API::

    from dify_lc import ChatDify, ChatRelay, DifyWorkflow, DifyClient
    from dify_lc.errors import DifyLCError, RateLimitError, ...
"""

from dify_lc.chat_models import ChatDify, ChatRelay
from dify_lc.client import DifyClient
from dify_lc.config import from_config
from dify_lc.errors import (
    AllRoutesFailedError,
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BackendConfigError,
    BadRequestError,
    BreakerOpenError,
    ConfigurationError,
    DifyLCError,
    InBandStreamError,
    InputError,
    NotFoundError,
    ProtocolError,
    RateLimitError,
    ServerError,
    StreamInterruptedError,
    WorkflowRunFailedError,
)
from dify_lc.observability import (
    Metrics,
    MetricsCallbackHandler,
    Price,
    PriceTable,
    configure_logging,
)
from dify_lc.rate_limit import RedisRateLimiter
from dify_lc.resilience.breaker import Breaker, BreakerPolicy
from dify_lc.resilience.plan import Route
from dify_lc.resilience.retry import RetryPolicy
from dify_lc.resilience.shared import SharedStorage, shared_breaker
from dify_lc.resilient import ResilientChatModel, ResilientRunnable
from dify_lc.transport import Timeouts
from dify_lc.workflow import DifyWorkflow

__version__ = "0.1.0"

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AllRoutesFailedError",
    "AuthenticationError",
    "BackendConfigError",
    "BadRequestError",
    "Breaker",
    "BreakerOpenError",
    "BreakerPolicy",
    "ChatDify",
    "ChatRelay",
    "ConfigurationError",
    "DifyClient",
    "DifyLCError",
    "DifyWorkflow",
    "InBandStreamError",
    "InputError",
    "Metrics",
    "MetricsCallbackHandler",
    "NotFoundError",
    "Price",
    "PriceTable",
    "ProtocolError",
    "RateLimitError",
    "RedisRateLimiter",
    "ResilientChatModel",
    "ResilientRunnable",
    "RetryPolicy",
    "Route",
    "ServerError",
    "SharedStorage",
    "StreamInterruptedError",
    "Timeouts",
    "WorkflowRunFailedError",
    "__version__",
    "configure_logging",
    "from_config",
    "shared_breaker",
]
