"""ResilientChatModel and ResilientRunnable: breaker, retry, deadline, fallback and canary.

Both are thin drivers around :class:`~dify_lc.resilience.plan.FallbackPlan`; the decisions live
there and in the breaker, retry and canary modules.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterator,
    Mapping,
    Sequence,
)
from typing import Any, cast

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.globals import get_llm_cache
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig, RunnableSerializable
from pydantic import ConfigDict, Field, PrivateAttr

from dify_lc.chat_models._base import HTTPChatModel
from dify_lc.chat_models._configurable import ConfigurableChatModel, pull_configurable
from dify_lc.errors import ConfigurationError, InputError
from dify_lc.observability.metrics import Metrics
from dify_lc.observability.prices import PriceTable
from dify_lc.resilience.breaker import Breaker, BreakerPolicy
from dify_lc.resilience.canary import bucket, choose
from dify_lc.resilience.plan import FallbackPlan, Route, Try, Wait
from dify_lc.resilience.recorder import Recorder, model_name_of
from dify_lc.resilience.retry import RetryPolicy
from dify_lc.resilience.shared import connect, shared_breaker
from dify_lc.settings import HTTPSettings

__all__ = ["ResilientChatModel", "ResilientRunnable", "Route"]

# Per-call keywords the resilient layer reads (also from config["configurable"]).
_CALL_KEYS = ("sticky_key", "user", "conversation_id", "inputs", "files", "response_mode")
# Keywords only dify-lc models understand: never passed to third-party models.
_NATIVE_KEYS = frozenset({"conversation_id", "inputs", "files", "response_mode", "user"})


def _make_routes(
    primary: Any,
    fallbacks: Sequence[Any],
    routes: Sequence[Route] | None,
    canary: Mapping[str, float] | None,
    breaker: BreakerPolicy | None,
    breakers: Mapping[str, Any] | None,
    redis: Any = None,
    redis_namespace: str = "dify-lc",
) -> list[Route]:
    if routes:
        if redis is not None:
            raise ConfigurationError(
                "redis= shares the breakers it builds; with routes=, give "
                "each Route a Breaker over dify_lc.shared_breaker()"
            )
        built = list(routes)
    else:
        if primary is None:
            raise ConfigurationError("give primary= (and fallbacks=), or routes=")
        client = connect(redis) if isinstance(redis, str) else redis
        policy = breaker or BreakerPolicy()
        built = []
        for runnable in (primary, *fallbacks):
            name = _route_name(runnable, {r.name for r in built})
            custom = (breakers or {}).get(name)
            if custom is None and client is not None:
                custom = shared_breaker(
                    name,
                    client,
                    fail_max=policy.fail_max,
                    reset_timeout=policy.reset_timeout,
                    namespace=f"{redis_namespace}:{name}",
                )
            built.append(
                Route(
                    name=name,
                    runnable=runnable,
                    breaker=Breaker(name, breaker, breaker=custom),
                    idempotent=_idempotent(runnable),
                    native=isinstance(runnable, HTTPSettings),
                )
            )
    names = [r.name for r in built]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"route names must be unique, got {names}")
    for name, weight in (canary or {}).items():
        route = next((r for r in built if r.name == name), None)
        if route is None:
            raise ConfigurationError(f"canary names unknown route {name!r}; routes: {names}")
        if not 0 <= weight <= 1:
            raise ConfigurationError(f"canary weight of {name!r} must be in [0, 1]")
        route.weight = float(weight)
    if sum(r.weight for r in built) > 1 + 1e-9:
        raise ConfigurationError("canary weights add up to more than 1")
    return built


def _route_name(runnable: Any, taken: set[str]) -> str:
    base = getattr(runnable, "backend", None) or type(runnable).__name__
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    return name


def _idempotent(runnable: Any) -> bool:
    if isinstance(runnable, HTTPSettings):
        return runnable._endpoint.idempotent
    return True  # third-party APIs (OpenAI, Anthropic, …) are stateless


class _Resilience:
    """The policy part shared by the chat model and the runnable (not a public class)."""

    def __init__(
        self,
        routes: list[Route],
        retry: RetryPolicy,
        deadline: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        asleep: Callable[[float], Any] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
        recorder: Recorder | None = None,
    ) -> None:
        self.routes = routes
        self.retry = retry
        self.deadline = deadline
        self.clock, self.sleep, self.asleep, self.rand = clock, sleep, asleep, rand
        self.recorder = recorder

    def finish(
        self, plan: FallbackPlan, *, result: Any = None, error: BaseException | None = None
    ) -> None:
        """The logical call is over: one ``llm.call`` event and the call metrics."""
        if self.recorder is not None:
            self.recorder.call(plan, result=result, error=error)

    def plan(self, kwargs: dict[str, Any]) -> FallbackPlan:
        """Order the routes for this call (canary first) and start its deadline."""
        routes = self.routes
        weights = [r.weight for r in routes]
        position = None
        if any(weights):
            key = kwargs.pop("sticky_key", None) or kwargs.get("user")
            position = bucket(str(key)) if key is not None else self.rand()
            chosen = choose(weights, position)
            if chosen is not None and chosen != 0:
                routes = [routes[chosen], *routes[:chosen], *routes[chosen + 1 :]]
        else:
            kwargs.pop("sticky_key", None)
        deadline = None if self.deadline is None else self.clock() + self.deadline
        recorder = self.recorder
        return FallbackPlan(
            routes,
            self.retry,
            deadline,
            clock=self.clock,
            rand=self.rand,
            observer=recorder.attempt if recorder is not None else None,
            # request_id is drawn only if an event is written (see Recorder)
            bucket=position,
        )

    @staticmethod
    def route_kwargs(route: Route, timeout: float | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The keywords this route gets: ours only for our models, plus the deadline left."""
        if route.native:
            out = dict(kwargs)
            out["max_retries"] = 0  # the resilient layer owns retries
            if timeout is not None:
                out["timeout"] = timeout
            return out
        return {k: v for k, v in kwargs.items() if k not in _NATIVE_KEYS}


def _has_content(item: Any) -> bool:
    """Does this streamed item commit the stream? A message chunk with text or a tool call;
    any other item (a Runnable's output) as soon as it exists."""
    if isinstance(item, BaseMessage):
        return bool(item.content) or bool(getattr(item, "tool_call_chunks", None))
    return True


def _text(item: Any) -> str:
    if isinstance(item, BaseMessage):
        return item.content if isinstance(item.content, str) else ""
    if isinstance(item, str):
        return item
    if isinstance(item, Mapping) and isinstance(item.get("text"), str):
        return str(item["text"])  # DifyWorkflow's text_chunk items
    return ""


def _recorder(metrics: Metrics | bool, prices: PriceTable | None) -> Recorder:
    if metrics is True:
        metrics = Metrics()
    return Recorder(metrics or None, prices)


class _RoutesMixin:
    """What both resilient classes offer about their routes (no fields: a plain mixin)."""

    routes: list[Route]
    _core: _Resilience

    @property
    def metrics(self) -> Metrics | None:
        """Per-route / per-backend / per-call metrics of this model (``snapshot()``)."""
        recorder = self._core.recorder
        return recorder.metrics if recorder is not None else None

    def use_clock(
        self,
        clock: Callable[[], float],
        *,
        sleep: Callable[[float], None] | None = None,
        asleep: Callable[[float], Any] | None = None,
        rand: Callable[[], float] | None = None,
    ) -> None:
        """Replace time and randomness (for tests: no real waiting, reproducible jitter).

        ``clock`` is used for deadlines and, as the wall clock, by every route's breaker.
        """
        core = self._core
        core.clock = clock
        core.sleep = sleep or core.sleep
        core.asleep = asleep or core.asleep
        core.rand = rand or core.rand
        for route in self.routes:
            route.breaker._wall = clock

    def route(self, name: str) -> Route:
        """The route called ``name``."""
        for route in self.routes:
            if route.name == name:
                return route
        raise KeyError(name)


class ResilientChatModel(_RoutesMixin, ConfigurableChatModel):
    """A chat model that survives its backends: breaker, retry, deadline, fallback, canary.

    Example:
        .. code-block:: python

            model = ResilientChatModel(
                primary=ChatDify(),                  # the official channel
                fallbacks=[ChatRelay(model="gpt-4o")],
                canary={"relay": 0.05},              # 5% of users go to the relay first
                deadline=30,
            )
            model.invoke("Where is my order?", user="customer-42")

    Routing: routes are tried in order — the canary's pick first (a stable hash of the sticky
    key: ``sticky_key=`` or ``user=`` per call, or ``config["configurable"]``; random without
    one), then the others as declared (``primary`` first). A route whose breaker is open is
    skipped at once.

    Per route: retryable errors (connect errors, 429, 5xx, in-band errors before the first
    token; see :mod:`dify_lc.errors`) are retried per ``retry`` (server advice honoured when it
    fits the deadline); errors that allow fallback move on to the next route; others (a bad
    request) are raised at once. Each outcome feeds the route's :class:`Breaker`.

    Deadline: one budget for the whole call — every attempt, wait and fallback. dify-lc
    models get the time left as their own timeout; third-party models are bounded exactly on
    the async path (cancelled at the deadline) and between attempts on the sync path. When the
    budget runs out or every route failed: ``AllRoutesFailedError`` listing every attempt.

    Streaming: failures before the first content token fall back invisibly; after it, no
    retry and no fallback — a ``StreamInterruptedError`` with the partial text.

    Args:
        primary, fallbacks: chat models in fallback order (names from their ``backend`` field,
            or their class name), or ``routes=`` for full control.
        canary: route name → share of traffic in ``[0, 1]``; the primary gets the rest.
        retry: :class:`RetryPolicy` (default: 2 retries, full-jitter backoff, ≤ 8 s waits).
        breaker: :class:`BreakerPolicy` for every route; ``breakers=`` maps route names to your
            own ``pybreaker.CircuitBreaker`` objects (shared Redis storage, listeners).
        redis: a ``redis.Redis`` client or URL: every route's breaker state is shared through
            it (key prefix ``<redis_namespace>:<route>``, default ``dify-lc:<route>``; give
            each app on one Redis its own), so processes behind a load balancer trip, probe
            and recover as one; see :class:`~dify_lc.resilience.shared.SharedStorage`.
        deadline: seconds for the whole call (default 60; ``None``: none).
        metrics: a :class:`~dify_lc.observability.metrics.Metrics` to record into (default: a
            new one, see :attr:`metrics`; ``False``: none).
        prices: a :class:`~dify_lc.observability.prices.PriceTable` for routes whose backend
            does not report a price (Dify does).

    Events: with logging configured (``dify_lc.configure_logging()``), every attempt writes an
    ``llm.attempt`` event and every call an ``llm.call`` event (route, backend, outcome, error,
    latency, time to first token, tokens, cost, breaker state, canary bucket, request id).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    routes: list[Route] = Field(default_factory=list)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    deadline: float | None = 60.0

    _core: _Resilience = PrivateAttr()
    _call_keys = _CALL_KEYS

    def __init__(
        self,
        primary: BaseChatModel | None = None,
        fallbacks: Sequence[BaseChatModel] = (),
        *,
        routes: Sequence[Route] | None = None,
        canary: Mapping[str, float] | None = None,
        retry: RetryPolicy | None = None,
        breaker: BreakerPolicy | None = None,
        breakers: Mapping[str, Any] | None = None,
        redis: Any = None,
        redis_namespace: str = "dify-lc",
        deadline: float | None = 60.0,
        metrics: Metrics | bool = True,
        prices: PriceTable | None = None,
        **kwargs: Any,
    ) -> None:
        if deadline is not None and deadline <= 0:
            raise ConfigurationError("deadline must be positive (or None)")
        built = _make_routes(
            primary, fallbacks, routes, canary, breaker, breakers, redis, redis_namespace
        )
        super().__init__(  # type: ignore[call-arg]
            routes=built, retry=retry or RetryPolicy(), deadline=deadline, **kwargs
        )
        self._core = _Resilience(built, self.retry, deadline, recorder=_recorder(metrics, prices))

    @property
    def _llm_type(self) -> str:
        return "dify-lc-resilient"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"routes": [r.name for r in self.routes], "deadline": self.deadline}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        # LangChain's default probes self.model, .model_name, .temperature and .max_tokens
        # with hasattr: four AttributeErrors from pydantic, ~11 µs on every call. The trace
        # names the primary route's model instead.
        params: dict[str, Any] = {"ls_provider": "dify-lc", "ls_model_type": "chat"}
        model = model_name_of(self.routes[0].runnable) if self.routes else None
        if model:
            params["ls_model_name"] = model
        if stop:
            params["ls_stop"] = stop
        return params

    def bind_tools(
        self, tools: Sequence[Any], **kwargs: Any
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools on every route (each must support tool calling); breakers are shared.

        ``with_structured_output`` (LangChain's default, through tool calling) works on top.
        """
        routes = []
        for route in self.routes:
            try:
                bound = route.runnable.bind_tools(tools, **kwargs)
            except NotImplementedError:
                raise InputError(
                    f"route {route.name!r} ({type(route.runnable).__name__}) does not support "
                    "tool calling, so the resilient model cannot bind tools"
                ) from None
            routes.append(
                Route(
                    name=route.name,
                    runnable=bound,
                    breaker=route.breaker,
                    weight=route.weight,
                    idempotent=route.idempotent,
                    native=route.native,
                )
            )
        clone = ResilientChatModel(routes=routes, retry=self.retry, deadline=self.deadline)
        clone._core = _Resilience(
            routes,
            self.retry,
            self.deadline,
            clock=self._core.clock,
            sleep=self._core.sleep,
            asleep=self._core.asleep,
            rand=self._core.rand,
            recorder=self._core.recorder,
        )
        return clone

    # ------------------------------------------------------------------ drivers

    @staticmethod
    def _child(run_manager: Any) -> RunnableConfig:
        # The routes' own runs get no callbacks of ours: the resilient run already reports the
        # call and its tokens, and a handler (say, one that prints tokens) must not see every
        # token twice. Global tracing still records the route runs on their own.
        return {"callbacks": []}

    @staticmethod
    def _label(message: BaseMessage, plan: FallbackPlan) -> None:
        message.response_metadata["route"] = plan.served.name if plan.served else None
        message.response_metadata["attempts"] = len(plan.attempts) + 1

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        core = self._core
        plan = core.plan(kwargs)
        config = self._child(run_manager)

        def call(step: Try) -> BaseMessage:
            kw = core.route_kwargs(step.route, step.timeout, kwargs)
            return _invoke(step.route, messages, config, stop, kw)

        message = _drive_call(core, plan, call)
        self._label(message, plan)
        return ChatResult(generations=[ChatGeneration(message=message)])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        core = self._core
        plan = core.plan(kwargs)
        config = self._child(run_manager)

        async def call(step: Try) -> BaseMessage:
            kw = core.route_kwargs(step.route, step.timeout, kwargs)
            return await _ainvoke(step.route, messages, config, stop, kw)

        message = await _adrive_call(core, plan, call)
        self._label(message, plan)
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        core = self._core
        plan = core.plan(kwargs)
        config = self._child(run_manager)

        def open_stream(step: Try) -> Iterator[Any]:
            kw = core.route_kwargs(step.route, step.timeout, kwargs)
            return _iter(step.route, messages, config, stop, kw)

        for chunk in _drive_stream(core, plan, open_stream):
            yield ChatGenerationChunk(message=chunk)
        yield self._route_chunk(plan)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        core = self._core
        plan = core.plan(kwargs)
        config = self._child(run_manager)

        def open_stream(step: Try) -> AsyncGenerator[Any, None]:
            kw = core.route_kwargs(step.route, step.timeout, kwargs)
            return _aiter(step.route, messages, config, stop, kw)

        async for chunk in _adrive_stream(core, plan, open_stream):
            yield ChatGenerationChunk(message=chunk)
        yield self._route_chunk(plan)

    @staticmethod
    def _route_chunk(plan: FallbackPlan) -> ChatGenerationChunk:
        name = plan.served.name if plan.served else None
        return ChatGenerationChunk(
            message=AIMessageChunk(
                content="", response_metadata={"route": name, "attempts": len(plan.attempts) + 1}
            )
        )


def _drive_call(core: _Resilience, plan: FallbackPlan, call: Callable[[Try], Any]) -> Any:
    """Run ``call`` through the plan until a route answers; record the call either way."""
    try:
        while True:
            step = plan.next()
            if isinstance(step, Wait):
                core.sleep(step.seconds)
                continue
            try:
                result = call(step)
            except BaseException as exc:
                plan.failure(exc)
                continue
            plan.success(result)
            core.finish(plan, result=result)
            return result
    except BaseException as exc:
        core.finish(plan, error=exc)
        raise


async def _adrive_call(
    core: _Resilience, plan: FallbackPlan, call: Callable[[Try], Awaitable[Any]]
) -> Any:
    """Async twin of :func:`_drive_call`; third-party routes are cancelled at the deadline."""
    try:
        while True:
            step = plan.next()
            if isinstance(step, Wait):
                await core.asleep(step.seconds)
                continue
            try:
                async with asyncio.timeout(step.timeout):
                    result = await call(step)
            except BaseException as exc:
                plan.failure(_deadline_error(exc, step.timeout))
                continue
            plan.success(result)
            core.finish(plan, result=result)
            return result
    except BaseException as exc:
        core.finish(plan, error=exc)
        raise


def _drive_stream(
    core: _Resilience, plan: FallbackPlan, open_stream: Callable[[Try], Iterator[Any]]
) -> Iterator[Any]:
    """Stream through the plan: items before the first content item are held, and dropped
    with an attempt that fails; after it, a failure is a ``StreamInterruptedError``."""
    summary: Any = None  # the item carrying usage (a chat model's last chunk), for events
    while True:
        try:
            step = plan.next()
        except BaseException as exc:
            core.finish(plan, error=exc)
            raise
        if isinstance(step, Wait):
            core.sleep(step.seconds)
            continue
        held: list[Any] | None = []
        parts: list[str] = []
        stream = open_stream(step)
        try:
            for item in stream:
                if getattr(item, "usage_metadata", None):
                    summary = item
                if held is not None:
                    held.append(item)
                    if not _has_content(item):
                        continue
                    pending, held = held, None  # committed
                    plan.first_token_at = core.clock()
                    parts.extend(_text(i) for i in pending)
                    yield from pending
                    continue
                parts.append(_text(item))
                yield item
        except GeneratorExit:
            _close(stream)
            plan.abandon()
            core.finish(plan, error=GeneratorExit())
            raise
        except BaseException as exc:
            if held is None:
                err = plan.failure_after_commit(exc, "".join(parts))
                core.finish(plan, error=err)
                raise err from exc
            try:
                plan.failure(exc)
            except BaseException as final:
                core.finish(plan, error=final)
                raise
            continue
        plan.success(summary)
        core.finish(plan, result=summary)
        yield from held or ()
        return


async def _adrive_stream(
    core: _Resilience, plan: FallbackPlan, open_stream: Callable[[Try], AsyncGenerator[Any, None]]
) -> AsyncIterator[Any]:
    """Async twin of :func:`_drive_stream`; each item wait is bounded by the deadline left."""
    summary: Any = None
    while True:
        try:
            step = plan.next()
        except BaseException as exc:
            core.finish(plan, error=exc)
            raise
        if isinstance(step, Wait):
            await core.asleep(step.seconds)
            continue
        held: list[Any] | None = []
        parts: list[str] = []
        stream = open_stream(step)
        deadline = None if step.timeout is None else core.clock() + step.timeout
        try:
            while True:
                left = None if deadline is None else max(deadline - core.clock(), 0)
                try:
                    async with asyncio.timeout(left):
                        item = await anext(stream)
                except StopAsyncIteration:
                    break
                if getattr(item, "usage_metadata", None):
                    summary = item
                if held is not None:
                    held.append(item)
                    if not _has_content(item):
                        continue
                    pending, held = held, None
                    plan.first_token_at = core.clock()
                    for i in pending:
                        parts.append(_text(i))
                        yield i
                    continue
                parts.append(_text(item))
                yield item
        except (GeneratorExit, asyncio.CancelledError) as stop:
            await stream.aclose()
            plan.abandon()
            core.finish(plan, error=stop)
            raise
        except BaseException as exc:
            await stream.aclose()
            exc = _deadline_error(exc, step.timeout)
            if held is None:
                err = plan.failure_after_commit(exc, "".join(parts))
                core.finish(plan, error=err)
                raise err from exc
            try:
                plan.failure(exc)
            except BaseException as final:
                core.finish(plan, error=final)
                raise
            continue
        plan.success(summary)
        core.finish(plan, result=summary)
        for i in held or ():
            yield i
        return


async def _agen(items: AsyncIterator[Any]) -> AsyncGenerator[Any, None]:
    async for item in items:
        yield item


def _close(stream: Iterator[Any]) -> None:
    close = getattr(stream, "close", None)
    if close is not None:
        close()


def _direct(route: Route) -> HTTPChatModel | None:
    """Our own chat model, when LangChain's invoke would add nothing here: call it directly.

    The resilient run already did LangChain's per-call work (callbacks, tracing); going through
    the route's own ``invoke`` again costs ~0.15 ms per call for nothing, since route runs get
    no callbacks. Not when the route has a rate limiter or a cache, which ``invoke`` applies.
    """
    model = route.runnable
    if not (route.native and isinstance(model, HTTPChatModel)) or model.rate_limiter:
        return None
    if model.cache is False or (model.cache is None and get_llm_cache() is None):
        return model
    return None


def _invoke(
    route: Route, messages: list[BaseMessage], config: RunnableConfig, stop: Any, kw: Any
) -> BaseMessage:
    model = _direct(route)
    if model is not None:
        return model._answer(messages, stop, kw)
    return cast(BaseMessage, route.runnable.invoke(messages, config, stop=stop, **kw))


async def _ainvoke(
    route: Route, messages: list[BaseMessage], config: RunnableConfig, stop: Any, kw: Any
) -> BaseMessage:
    model = _direct(route)
    if model is not None:
        return await model._aanswer(messages, stop, kw)
    return cast(BaseMessage, await route.runnable.ainvoke(messages, config, stop=stop, **kw))


def _iter(
    route: Route, messages: list[BaseMessage], config: RunnableConfig, stop: Any, kw: Any
) -> Generator[Any, None, None]:
    model = _direct(route)
    if model is None:
        yield from route.runnable.stream(messages, config, stop=stop, **kw)
        return
    for chunk in model._stream(messages, stop, None, **kw):
        yield chunk.message


async def _aiter(
    route: Route, messages: list[BaseMessage], config: RunnableConfig, stop: Any, kw: Any
) -> AsyncGenerator[Any, None]:
    model = _direct(route)
    if model is None:
        async for item in route.runnable.astream(messages, config, stop=stop, **kw):
            yield item
        return
    async for chunk in model._astream(messages, stop, None, **kw):
        yield chunk.message


def _deadline_error(exc: BaseException, timeout: float | None) -> BaseException:
    """asyncio.timeout raises TimeoutError at the deadline: make it our typed timeout."""
    if isinstance(exc, TimeoutError) and timeout is not None and not hasattr(exc, "retryable"):
        from dify_lc.errors import APITimeoutError

        err = APITimeoutError(
            f"deadline of the resilient call reached after {timeout:.3f}s",
            request_sent=True,
            retryable=False,
        )
        err.__cause__ = exc
        return err
    return exc


class ResilientRunnable(_RoutesMixin, RunnableSerializable[Any, Any]):
    """Breaker, retry, deadline, fallback and canary around any Runnables (e.g. DifyWorkflow).

    Same policies and arguments as :class:`ResilientChatModel`; ``invoke``/``ainvoke`` (and
    ``batch``/``abatch``) go through the fallback plan. ``stream`` tries routes the same way
    and commits at the first item.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    routes: list[Route] = Field(default_factory=list)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    deadline: float | None = 60.0

    _core: _Resilience = PrivateAttr()

    # Same constructor as ResilientChatModel, spelled out on purpose: pydantic models get their
    # __init__ signature for type checkers from the class itself, not from a shared mixin.
    def __init__(
        self,
        primary: Runnable[Any, Any] | None = None,
        fallbacks: Sequence[Runnable[Any, Any]] = (),
        *,
        routes: Sequence[Route] | None = None,
        canary: Mapping[str, float] | None = None,
        retry: RetryPolicy | None = None,
        breaker: BreakerPolicy | None = None,
        breakers: Mapping[str, Any] | None = None,
        redis: Any = None,
        redis_namespace: str = "dify-lc",
        deadline: float | None = 60.0,
        metrics: Metrics | bool = True,
        prices: PriceTable | None = None,
        **kwargs: Any,
    ) -> None:
        if deadline is not None and deadline <= 0:
            raise ConfigurationError("deadline must be positive (or None)")
        built = _make_routes(
            primary, fallbacks, routes, canary, breaker, breakers, redis, redis_namespace
        )
        super().__init__(  # type: ignore[call-arg]
            routes=built, retry=retry or RetryPolicy(), deadline=deadline, **kwargs
        )
        self._core = _Resilience(built, self.retry, deadline, recorder=_recorder(metrics, prices))

    def _plan(self, config: RunnableConfig | None) -> FallbackPlan:
        kwargs: dict[str, Any] = {}
        pull_configurable(config, kwargs, _CALL_KEYS)
        return self._core.plan(kwargs)

    def _run(self, value: Any, config: RunnableConfig) -> Any:
        return _drive_call(
            self._core, self._plan(config), lambda step: step.route.runnable.invoke(value, config)
        )

    async def _arun(self, value: Any, config: RunnableConfig) -> Any:
        return await _adrive_call(
            self._core, self._plan(config), lambda step: step.route.runnable.ainvoke(value, config)
        )

    def stream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[Any]:
        """Stream the first route that works; committed at the first item (then no fallback)."""
        if kwargs:
            raise InputError(f"unsupported keyword arguments: {sorted(kwargs)}")
        plan = self._plan(config)
        yield from _drive_stream(
            self._core, plan, lambda step: iter(step.route.runnable.stream(input, config))
        )

    async def astream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        """Async twin of :meth:`stream`."""
        if kwargs:
            raise InputError(f"unsupported keyword arguments: {sorted(kwargs)}")
        plan = self._plan(config)
        async for item in _adrive_stream(
            self._core, plan, lambda step: _agen(step.route.runnable.astream(input, config))
        ):
            yield item

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        if kwargs:
            raise InputError(f"unsupported keyword arguments: {sorted(kwargs)}")
        return self._call_with_config(lambda value, config: self._run(value, config), input, config)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        if kwargs:
            raise InputError(f"unsupported keyword arguments: {sorted(kwargs)}")
        return await self._acall_with_config(
            lambda value, config: self._arun(value, config), input, config
        )
