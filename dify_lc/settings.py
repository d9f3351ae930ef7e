"""Connection settings shared by every model that talks HTTP (chat models, workflows).

Field values are validated at construction, before any network call: a missing key or URL
raises :class:`~dify_lc.errors.ConfigurationError` naming the environment variable.
"""

from __future__ import annotations

import functools
import ipaddress
import time
import warnings
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, PrivateAttr, SecretStr

from dify_lc.driver import Driver
from dify_lc.errors import ConfigurationError, InputError
from dify_lc.observability.redaction import register_secret
from dify_lc.resilience.retry import RetryPolicy
from dify_lc.transport import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_EVENT_BYTES, Endpoint, Timeouts

__all__ = ["HTTPSettings", "check_base_url"]


def check_base_url(url: str, *, env_var: str) -> str:
    """Validate a base URL; warn when a key would travel in clear text to another host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"base_url must be an http(s) URL, got {url!r} (set base_url= or {env_var})"
        )
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        warnings.warn(
            f"base_url {url!r} uses plain http to a non-loopback host: the API key is sent "
            "unencrypted. Use https unless this is a trusted private network.",
            UserWarning,
            stacklevel=4,
        )
    return url.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@functools.lru_cache(maxsize=16)
def _policy_for(max_retries: int) -> RetryPolicy:
    # Per-call overrides repeat (the resilient layer passes 0 on every call): share one.
    return RetryPolicy(max_retries=max_retries)


class HTTPSettings(BaseModel):
    """Connection fields and the endpoint/driver built from them (a pydantic mixin)."""

    api_key: SecretStr | None = None
    base_url: str = ""
    timeout: float | None = None
    """Total budget of one call in seconds, every retry and the whole stream included."""
    connect_timeout: float = 10.0
    """Seconds to establish a connection."""
    read_timeout: float = 60.0
    """Maximum seconds of silence between two reads."""
    max_retries: int = 2
    """Retries of retryable failures before the first token (see ``dify_lc.errors``)."""
    async_backend: Literal["aiohttp", "httpx"] = "aiohttp"
    """Async HTTP: ``"aiohttp"`` (default, fast) or ``"httpx"`` (httpx's pool; vcrpy replays it)."""
    verify_ssl: bool = True
    max_connections: int = 100
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    """Cap on a blocking response body (32 MiB); a larger one is a ``ProtocolError``."""
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    """Cap on one streamed SSE event (4 MiB); a larger one is a ``ProtocolError``."""
    http_client: Any = Field(default=None, exclude=True)
    """An ``httpx.Client`` to use instead of our pooled one (you own its lifetime)."""
    http_async_client: Any = Field(default=None, exclude=True)
    """An ``httpx.AsyncClient`` to use instead of our pooled ones (you own its lifetime)."""
    backend: str = ""
    """Name of this backend in errors, logs and metrics."""

    _endpoint: Endpoint = PrivateAttr()
    _driver: Driver = PrivateAttr()

    _api_key_env: ClassVar[str] = ""
    _base_url_env: ClassVar[str] = ""

    def _setup_http(self, *, idempotent: bool) -> None:
        """Validate the settings and build the endpoint; call at the end of ``__init__``.

        Done there rather than in a pydantic validator so the caller gets our typed error.
        """
        if self.api_key is None or not self.api_key.get_secret_value().strip():
            raise ConfigurationError(
                f"{type(self).__name__} needs an API key: pass api_key=... or set the "
                f"{self._api_key_env} environment variable"
            )
        if not self.base_url:
            raise ConfigurationError(
                f"{type(self).__name__} needs a base URL: pass base_url=... or set the "
                f"{self._base_url_env} environment variable"
            )
        self.base_url = check_base_url(self.base_url, env_var=self._base_url_env)
        register_secret(self.api_key)  # masked in every log line from now on
        if self.max_retries < 0:
            raise ConfigurationError("max_retries must be >= 0")
        if self.max_body_bytes <= 0 or self.max_event_bytes <= 0:
            raise ConfigurationError("max_body_bytes and max_event_bytes must be > 0")
        self._endpoint = Endpoint(
            self.base_url,
            api_key=self.api_key.get_secret_value(),
            backend=self.backend,
            idempotent=idempotent,
            timeouts=Timeouts(self.connect_timeout, self.read_timeout, self.timeout),
            verify=self.verify_ssl,
            async_backend=self.async_backend,
            http_client=self.http_client,
            http_async_client=self.http_async_client,
            max_connections=self.max_connections,
            max_body_bytes=self.max_body_bytes,
            max_event_bytes=self.max_event_bytes,
        )
        self._driver = Driver(self._endpoint, RetryPolicy(max_retries=self.max_retries))

    def _call_limits(self, kwargs: dict[str, Any]) -> tuple[float | None, RetryPolicy | None]:
        """Deadline and retry policy of one call: per-call ``timeout`` / ``max_retries`` win.

        A per-call ``timeout`` can only shorten the model's own budget (the resilience layer
        passes what is left of its deadline).
        """
        deadline = self._endpoint.timeouts.deadline()
        timeout = kwargs.get("timeout")
        if timeout is not None:
            if not isinstance(timeout, int | float) or timeout <= 0:
                raise InputError("timeout must be a positive number of seconds")
            at = time.monotonic() + float(timeout)
            deadline = at if deadline is None else min(deadline, at)
        retries = kwargs.get("max_retries")
        retry = None
        if retries is not None:
            if not isinstance(retries, int) or retries < 0:
                raise InputError("max_retries must be an integer >= 0")
            retry = _policy_for(retries)
        return deadline, retry

    def close(self) -> None:
        """Close the pooled sync client (optional: it is also released when collected)."""
        self._endpoint.close()

    async def aclose(self) -> None:
        """Close the pooled async client of the running loop."""
        await self._endpoint.aclose()
