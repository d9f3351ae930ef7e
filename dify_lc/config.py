"""Build a whole ResilientChatModel from a TOML file: routes, canary weights, policies.

Example ``routes.toml`` (going 5% → 20% → 50% → 100% is a one-line change of ``weight``)::

    deadline = 30                    # seconds for a whole call, fallbacks included

    [retry]                          # RetryPolicy fields
    max_retries = 2

    [breaker]                        # BreakerPolicy fields, for every route
    fail_max = 5
    reset_timeout = 30
    slow_call_duration = 10

    [[routes]]                       # the first route is the primary
    name = "official"
    type = "dify"
    base_url = "https://api.dify.ai/v1"
    api_key_env = "DIFY_API_KEY"     # keys come from the environment, never from the file
    user = "support-bot"

    [[routes]]
    name = "relay"
    type = "relay"
    model = "gpt-4o"
    base_url = "https://relay.example.com/v1"
    api_key_env = "RELAY_API_KEY"
    weight = 0.05                    # canary share; the primary gets the rest

    requests_per_second = 20         # optional client-side rate limit of this route

    [routes.breaker]                 # optional per-route override
    fail_max = 3

    [shared]                         # optional: many processes act as one (needs dify-lc[redis])
    redis_url_env = "REDIS_URL"      # breakers and rate limits shared through this Redis
    namespace = "support-bot"        # optional key prefix (default "dify-lc"): one per app

Any other key of a route is a field of :class:`~dify_lc.ChatDify` or
:class:`~dify_lc.ChatRelay` (``read_timeout``, ``inputs``, ``temperature``, …).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from langchain_core.rate_limiters import BaseRateLimiter, InMemoryRateLimiter
from pydantic import SecretStr, ValidationError

from dify_lc.chat_models import ChatDify, ChatRelay
from dify_lc.errors import ConfigurationError
from dify_lc.protocol.error_mapping import scrub
from dify_lc.rate_limit import RedisRateLimiter
from dify_lc.resilience.breaker import Breaker, BreakerPolicy
from dify_lc.resilience.plan import Route
from dify_lc.resilience.retry import RetryPolicy
from dify_lc.resilience.shared import connect, shared_breaker
from dify_lc.resilient import ResilientChatModel

__all__ = ["from_config"]

_TYPES: dict[str, tuple[type[ChatDify] | type[ChatRelay], str]] = {
    "dify": (ChatDify, "DIFY_API_KEY"),
    "relay": (ChatRelay, "RELAY_API_KEY"),
}
_TOP_KEYS = frozenset({"deadline", "retry", "breaker", "routes", "shared"})
_SECRET_KEYS = frozenset({"api_key", "key", "token", "password", "secret"})


def from_config(
    source: str | os.PathLike[str] | Mapping[str, Any],
    *,
    env: Mapping[str, str] | None = None,
) -> ResilientChatModel:
    """A :class:`ResilientChatModel` from a TOML file (or an already parsed mapping).

    API keys are read from the environment variables the routes name (``api_key_env``);
    a key written in the file is refused. Every problem raises
    :class:`~dify_lc.errors.ConfigurationError` naming the route and the field.
    """
    env = os.environ if env is None else env
    if isinstance(source, Mapping):
        data = dict(source)
        where = "config"
    else:
        path = Path(source)
        where = str(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigurationError(f"cannot read {where}: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"{where} is not valid TOML: {exc}") from exc
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise ConfigurationError(f"{where}: unknown keys {sorted(unknown)}")
    raw_routes = data.get("routes")
    if not isinstance(raw_routes, list) or not raw_routes:
        raise ConfigurationError(f"{where}: needs at least one [[routes]] table")
    default_breaker = _policy(BreakerPolicy, data.get("breaker"), f"{where} [breaker]")
    retry = _policy(RetryPolicy, data.get("retry"), f"{where} [retry]")
    redis, namespace = _shared_redis(data.get("shared"), env, where)
    routes = [
        _route(raw, index, default_breaker, env, where, redis, namespace)
        for index, raw in enumerate(raw_routes)
    ]
    if routes[0].weight:
        raise ConfigurationError(
            f"{where}: the first route ({routes[0].name}) is the primary; it gets the share the "
            "other routes' weights leave, so it takes no weight"
        )
    canary = {r.name: r.weight for r in routes if r.weight}
    for r in routes:
        r.weight = 0.0  # set again, validated, by the model from `canary`
    return ResilientChatModel(
        routes=routes, canary=canary, retry=retry, deadline=data.get("deadline", 60.0)
    )


def _policy(cls: type[Any], raw: Any, where: str) -> Any:
    if raw is None:
        return cls()
    if not isinstance(raw, Mapping):
        raise ConfigurationError(f"{where} must be a table")
    try:
        return cls(**raw)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"{where}: {exc}") from exc


def _shared_redis(raw: Any, env: Mapping[str, str], where: str) -> tuple[Any, str]:
    if raw is None:
        return None, "dify-lc"
    if (
        not isinstance(raw, Mapping)
        or "redis_url_env" not in raw
        or not set(raw) <= {"redis_url_env", "namespace"}
    ):
        raise ConfigurationError(
            f"{where} [shared]: takes redis_url_env and, optionally, namespace"
        )
    namespace = raw.get("namespace", "dify-lc")
    if not isinstance(namespace, str) or not namespace:
        raise ConfigurationError(f"{where} [shared]: namespace must be a non-empty string")
    url = env.get(str(raw["redis_url_env"]))
    if not url:
        raise ConfigurationError(
            f"{where} [shared]: environment variable {raw['redis_url_env']} is not set"
        )
    return connect(url), namespace


def _limiter(name: str, rate: Any, redis: Any, namespace: str, label: str) -> BaseRateLimiter:
    if not isinstance(rate, int | float) or isinstance(rate, bool) or rate <= 0:
        raise ConfigurationError(f"{label}: requests_per_second must be a positive number")
    if redis is not None:
        return RedisRateLimiter(redis, requests_per_second=rate, key=f"{namespace}:{name}")
    return InMemoryRateLimiter(
        requests_per_second=rate, check_every_n_seconds=0.01, max_bucket_size=max(1, rate)
    )


def _route(
    raw: Any,
    index: int,
    default_breaker: BreakerPolicy,
    env: Mapping[str, str],
    where: str,
    redis: Any = None,
    namespace: str = "dify-lc",
) -> Route:
    if not isinstance(raw, Mapping):
        raise ConfigurationError(f"{where}: routes[{index}] must be a table")
    fields = dict(raw)
    name = str(fields.pop("name", f"route-{index}"))
    label = f"{where}: route {name!r}"
    leaked = _SECRET_KEYS & set(fields)
    if leaked:
        raise ConfigurationError(
            f"{label}: {sorted(leaked)} must not be in the file; name an environment variable "
            "with api_key_env instead"
        )
    kind = fields.pop("type", None)
    if kind not in _TYPES:
        raise ConfigurationError(f"{label}: type must be one of {sorted(_TYPES)}, got {kind!r}")
    cls, default_env = _TYPES[kind]
    key_env = str(fields.pop("api_key_env", default_env))
    key = env.get(key_env)
    if not key:
        raise ConfigurationError(f"{label}: environment variable {key_env} is not set")
    weight = fields.pop("weight", 0.0)
    if not isinstance(weight, int | float) or not 0 <= weight <= 1:
        raise ConfigurationError(f"{label}: weight must be a number in [0, 1]")
    breaker_raw = fields.pop("breaker", None)
    policy = (
        default_breaker
        if breaker_raw is None
        else _policy(
            BreakerPolicy,
            {**_fields_of(default_breaker), **breaker_raw},
            f"{label} [breaker]",
        )
    )
    rate = fields.pop("requests_per_second", None)
    if rate is not None:
        fields["rate_limiter"] = _limiter(name, rate, redis, namespace, label)
    fields.setdefault("backend", name)
    known = set(cls.model_fields) | {f.alias for f in cls.model_fields.values() if f.alias}
    typos = set(fields) - known
    if typos:
        raise ConfigurationError(f"{label}: unknown fields {sorted(typos)} for type {kind!r}")
    try:
        model = cls(api_key=SecretStr(key), **fields)
    except ValidationError as exc:
        raise ConfigurationError(f"{label}: {scrub(str(exc), [key])}") from None
    except ConfigurationError as exc:
        raise ConfigurationError(f"{label}: {exc.message}") from None
    return Route(
        name=name,
        runnable=model,
        breaker=Breaker(
            name,
            policy,
            breaker=None
            if redis is None
            else shared_breaker(
                name,
                redis,
                fail_max=policy.fail_max,
                reset_timeout=policy.reset_timeout,
                namespace=f"{namespace}:{name}",
            ),
        ),
        weight=float(weight),
        idempotent=model._endpoint.idempotent,
        native=True,
    )


def _fields_of(policy: BreakerPolicy) -> dict[str, Any]:
    return {name: getattr(policy, name) for name in policy.__dataclass_fields__}
