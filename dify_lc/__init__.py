"""dify-lc: LangChain chat models for Dify apps and OpenAI-compatible relays that survive outages.

Public API::

    from dify_lc import ChatDify, ChatRelay, DifyWorkflow, DifyClient
    from dify_lc.errors import DifyLCError, RateLimitError, ...
"""

from dify_lc.chat_models import ChatDify, ChatRelay
from dify_lc.client import DifyClient
from dify_lc.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BackendConfigError,
    BadRequestError,
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
from dify_lc.resilience.retry import RetryPolicy
from dify_lc.transport import Timeouts
from dify_lc.workflow import DifyWorkflow

__version__ = "0.1.0"

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BackendConfigError",
    "BadRequestError",
    "ChatDify",
    "ChatRelay",
    "ConfigurationError",
    "DifyClient",
    "DifyLCError",
    "DifyWorkflow",
    "InBandStreamError",
    "InputError",
    "NotFoundError",
    "ProtocolError",
    "RateLimitError",
    "RetryPolicy",
    "ServerError",
    "StreamInterruptedError",
    "Timeouts",
    "WorkflowRunFailedError",
    "__version__",
]
