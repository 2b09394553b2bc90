"""From a Plan (`plan.resolve`) to an answer: a route's targets in the order its strategy picks,
failing over on a target's failure, or the engine of that name.

`serve(request)` → Served: the answer of the first target that gave one. A target's
failure (`errors.TargetFailed`: a server error, a timeout, a refused connection, an open breaker, no
live worker) moves the request to the next target the strategy picks among those not tried, while
the request's deadline lasts; the client's own error (bad input) is returned as it is. When every
target has failed or is unavailable the client gets `errors.Unavailable` listing why, not a hang.

Each attempt is counted in the router's shared state (in flight, latency, errors), in the target's
circuit breaker and in its health monitor. In a route each target is tried once per request, without
retries (moving on is the retry); the last target left, and an engine called by its own name, get
the retry policy of `resilience.retry` within the deadline. Streams commit to a target when its first
event (local) or its response headers (remote) arrive: a failure after that ends the stream with an
error, since the client already holds part of the answer.

Fallbacks: when a route's own targets are exhausted (none available, or every one failed) and it
names fallbacks, each is tried in order within the same deadline: a fallback route with its own
targets, strategy and fallbacks, a fallback engine directly. The client's own errors never go to a
fallback. An answer from one says so (`Served.fallback`: the /v1 header X-Blaze-Fallback, the
request log, `blaze_route_fallbacks_total`); when all fail, the error lists why each did.
"""

import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import aiohttp
import orjson
import redis
from django.conf import settings

from core import errors, shared_state, tracing
from core.http_errors import OUTAGES, outage
from core.retry import UpstreamError, UpstreamTimeout, UpstreamUnreachable
from engines import contract
from engines.models import Engine, Route
from engines.serving import dispatch, grouping, remote
from engines.serving.plan import Plan
from engines.serving.request import InferenceRequest
from engines.serving.resilience import breaker as breakers
from engines.serving.resilience import health, resilience_id
from engines.serving.router import Candidate, NoTargetAvailable, alease_target, resilience_id_of, state
from telemetry import metrics, request_log
from usage import events as usage_events

log = logging.getLogger(__name__)


@dataclass
class Served:
    """One target's answer. Local: `result` (the worker's result) or, streaming, `events` (the worker's
    events, the first included). Remote: `response`, the upstream's aiohttp.ClientResponse (2xx or
    4xx) and its `body`, unless streaming: a streamed one is read through `chunks()`. `engine`: the
    engine that answered; `fallback`: the fallback of the requested route that answered, None when
    the route's own target (or the engine asked for) did."""

    engine: Engine
    result: dict[str, Any] | None = None
    events: AsyncGenerator[contract.Event, None] | None = None
    response: aiohttp.ClientResponse | None = None
    body: bytes | None = None
    fallback: str | None = None
    _done: Callable[[bool | None], Awaitable[None]] | None = field(default=None, repr=False)
    _meter: usage_events.RemoteMeter | None = field(default=None, repr=False)

    async def chunks(self) -> AsyncIterator[bytes]:
        """A streamed remote body, chunk by chunk as the upstream sends it."""
        assert self.response is not None and self._done is not None  # a streamed remote answer has both
        ok = None  # stays None when the client goes away mid-stream: the target is not at fault
        try:
            async for chunk in self.response.content.iter_any():
                if self._meter is not None:
                    self._meter.chunk(chunk)
                yield chunk
            ok = True
        except (aiohttp.ClientError, TimeoutError) as exc:
            ok = False
            log.warning("stream from %s broke off: %s", self.engine.name, exc or type(exc).__name__)
            # Its status went out with the first chunk: the client learns of the break from an error
            # event, in OpenAI's streaming shape, rather than from a stream that merely stops.
            error = {"message": f"The upstream host's stream broke off ({exc or type(exc).__name__}).",
                     "type": "server_error", "param": None, "code": "upstream_failed"}
            yield b"data: " + orjson.dumps({"error": error}) + b"\n\n"
        finally:
            self.response.release() if ok else self.response.close()
            await self._done(ok)
            if self._meter is not None:  # what the host sent counts, however the stream ended
                await _recorded(self._meter, {True: "answered", False: "failed", None: "cancelled"}[ok])


@dataclass
class _Attempt:
    """One try at one target: what to count when it ends."""

    engine: Engine
    worker: str | None = None
    route: Route | None = None
    candidate: Candidate | None = None
    lease: str | None = None
    attempts: int | None = None
    permit: breakers.Permit | None = None  # the breaker permit whose outcome is still to be counted here (see `aend`)
    started: float = field(default_factory=time.monotonic)

    @property
    def target(self) -> str:
        return resilience_id_of(self.candidate.target) if self.candidate else resilience_id(self.engine.name)

    @property
    def watched(self) -> bool:
        """Whether the target has a health record: a route's target, or a remote engine (a local
        engine called by its own name has none, and nothing else to count)."""
        return self.route is not None or self.engine.backend == Engine.Backend.REMOTE

    async def aend(self, ok: bool | None) -> None:
        """Count the outcome, in one round trip on the loop's Redis client: router state (routes),
        breaker, health. The breaker counts here while the attempt holds its permit: a local target's,
        from the route's pick, or a remote host's whose first try answered (`remote.forward`; failures
        and retries count inside `resilience.http`). ok=None: abandoned (the client went away, or a
        bug), not the target's doing: its lease and permit are given back, nothing counted. Redis
        trouble here never fails the answer."""
        if ok is None:
            return await self.aabandon()
        if not self.watched:
            return
        latency = time.monotonic() - self.started
        monitor = health.HealthMonitor(self.target)
        breaker = breakers.CircuitBreaker(self.target) if self.permit is not None else None

        parts = shared_state.Parts()

        def queue(pipe: Any) -> None:
            with parts.named("health", pipe):
                monitor.queue(pipe, ok, latency if ok else None)
            if self.route is not None:
                assert self.candidate is not None  # a route's attempt is at a candidate
                state.queue_release(pipe, self.candidate.id, latency, ok, lease=self.lease)
            if breaker is not None:
                with parts.named("breaker", pipe):
                    breaker.queue(pipe, "success" if ok else "failure", self.permit)

        try:
            replies = parts.split(await shared_state.abatch(queue))
        except Exception:  # noqa: BLE001 - bookkeeping must not turn an answer into an error
            log.exception("could not record the outcome of a request to %s", self.target)
            return
        monitor.read(replies["health"][0], ok)
        if breaker is not None:
            breaker.read(replies["breaker"][0])
        if self.route is not None:
            assert self.candidate is not None
            metrics.ROUTE_REQUESTS.labels(self.route.name, str(self.candidate.target), "ok" if ok else "failed").inc()

    @property
    def label(self) -> str:
        return str(self.candidate.target) if self.candidate else self.engine.name

    def logged(self, outcome: str, error: str = "") -> None:
        """The attempt in the request's log (the Requests page) and on its span."""
        tracing.note(outcome=outcome)
        request_log.note_attempt(target=self.label, engine=self.engine.name, worker=self.worker, outcome=outcome,
                                 seconds=time.monotonic() - self.started, error=error)

    async def aabandon(self) -> None:
        try:
            if self.route is not None:
                assert self.candidate is not None and self.lease is not None  # a route's attempt holds a lease
                await state.awithdraw(self.candidate.id, self.lease)
            if self.permit is not None:
                await breakers.CircuitBreaker(self.target).arelease(self.permit)
        except redis.RedisError as exc:  # the lease and the permit lapse on their own
            log.warning("could not give back the lease of a request to %s: %s", self.target, exc)


async def serve(request: InferenceRequest) -> Served:
    """The first answer a target of the request's plan gives, else one of its fallbacks (see the
    module's docstring). Its deadline, BLAZE_REQUEST_TIMEOUT_SECONDS, starts here."""
    plan = request.plan
    assert plan is not None  # resolved by `inference.prepare`
    request.deadline = time.monotonic() + settings.BLAZE_REQUEST_TIMEOUT_SECONDS

    async def own(each: Plan) -> Served:
        return await _own_targets(each, request)

    with tracing.span("blaze.serve", model=plan.name, route=plan.route.name if plan.route else None,
                      endpoint=request.endpoint, stream=request.stream) as span:
        served = await _with_fallbacks(plan, own, request.deadline, tried=set())
        span.set_attribute("blaze.engine", served.engine.name)
        if served.fallback is not None:
            span.set_attribute("blaze.fallback", served.fallback)
            request_log.note(fallback=served.fallback)
    return served


async def _with_fallbacks(plan: Plan, own: Callable[[Plan], Awaitable[Served]], ends: float,
                          tried: set[tuple[bool, str]]) -> Served:
    """The answer of the plan's own targets (`own(plan)`), else of its fallbacks in order, each with
    its own fallbacks. `tried`: the routes and engines this request has been to; none is tried twice,
    so fallbacks that meet again (or a loop) end."""
    tried.add((plan.route is not None, plan.name))
    try:
        return await own(plan)
    except errors.TargetFailed as exc:
        if not plan.fallbacks:
            raise
        reasons, failed = {plan.name: exc.message}, [exc]
        log.warning("route %s: no target answered, trying its fallbacks: %s", plan.name, exc)
    for fallback in plan.fallbacks:
        if time.monotonic() >= ends:
            raise errors.TimedOut(f"Neither route '{plan.name}' nor its fallbacks answered within the deadline "
                                  f"({_listed(reasons)}).")
        if fallback.unavailable or (fallback.route is not None, fallback.name) in tried:
            reasons[fallback.name] = fallback.unavailable or "already tried for this request"
            continue
        try:
            served = await _with_fallbacks(fallback, own, ends, tried)
        except errors.TargetFailed as exc:
            reasons[fallback.name] = exc.message
            failed.append(exc)
            continue
        served.fallback = fallback.name
        metrics.ROUTE_FALLBACKS.labels(plan.name, fallback.name).inc()
        log.warning("route %s answered through its fallback %s", plan.name, fallback.name)
        return served
    if len(failed) == len(reasons) and all(isinstance(exc, errors.Overloaded) for exc in failed):
        full = cast(list[errors.Overloaded], failed)  # as all() just found
        raise type(full[-1])(f"Route '{plan.name}' and its fallbacks are all full ({_listed(reasons)}).",
                             retry_after=min(exc.retry_after for exc in full))
    raise errors.Unavailable(f"Neither route '{plan.name}' nor its fallbacks could answer ({_listed(reasons)}).",
                             code="no_target_available")


def _listed(reasons: dict[str, str]) -> str:
    return "; ".join(f"{label}: {reason}" for label, reason in reasons.items())


async def _own_targets(plan: Plan, request: InferenceRequest) -> Served:
    """The answer of the plan's engine, or of the first of its route's targets that gives one."""
    if plan.route is None:
        return await _try(_Attempt(engine=plan.engine), request)
    if not plan.route.targets.all():  # a route of fallbacks only
        raise errors.Unavailable(str(NoTargetAvailable(plan.route, {})), code="no_target_available")
    tried: list[int] = []
    failures: dict[str, str] = {}
    full: list[errors.Overloaded] = []
    while True:
        try:
            with tracing.span("blaze.route.pick", route=plan.name, strategy=plan.route.strategy,
                              tried=len(tried)) as span:
                candidate, lease, permit = await alease_target(plan.route, request.client_key, exclude=tried)
                span.set_attributes({"blaze.target": str(candidate.target), "blaze.breaker_open": permit is None})
        except NoTargetAvailable as exc:
            request_log.note_skipped(exc.reasons)
            reasons = {**exc.reasons, **failures}
            if full and len(full) == len(reasons):  # every target is full: the client may retry shortly
                raise type(full[-1])(f"Every target of route '{plan.name}' is full ({_listed(reasons)}).",
                                     retry_after=min(each.retry_after for each in full)) from exc
            raise errors.Unavailable(str(NoTargetAvailable(plan.route, reasons)), code="no_target_available") from exc
        except redis.RedisError as exc:  # the routes' shared counts, breakers and health live there
            log.error("route %s: Redis is unreachable: %s", plan.name, exc)
            raise errors.Unavailable(f"Route '{plan.name}' cannot pick a target: Blaze's shared state (Redis) is "
                                     "unreachable.", code="no_target_available") from exc
        tried.append(candidate.id)
        last = not any(t.enabled and t.pk not in tried for t in plan.route.targets.all())
        attempt = _Attempt(engine=candidate.engine, worker=candidate.workers[0] if candidate.workers else None,
                           route=plan.route, candidate=candidate, lease=lease, permit=permit,
                           attempts=None if last else 1)
        try:
            return await _try(attempt, request)
        except errors.TargetFailed as exc:
            failures[str(candidate.target)] = str(exc)
            if isinstance(exc, errors.Overloaded):
                full.append(exc)
            metrics.ROUTE_FAILOVERS.labels(plan.route.name).inc()
            log.warning("route %s: target %s failed, trying the next: %s", plan.name, candidate.target, exc)
        if time.monotonic() >= request.deadline:
            raise errors.TimedOut(f"No target of route '{plan.name}' answered within the deadline "
                                  f"({_listed(failures)}).")


STREAMED = ("chat", "completion")  # what a remote host streams; images and embeddings come whole


async def _try(attempt: _Attempt, request: InferenceRequest) -> Served:
    with tracing.span("blaze.attempt", target=attempt.label, engine=attempt.engine.name,
                      backend=attempt.engine.backend, route=attempt.route.name if attempt.route else None,
                      worker=attempt.worker):
        return await _attempted(attempt, request)


async def _attempted(attempt: _Attempt, request: InferenceRequest) -> Served:
    try:
        if attempt.route is not None and attempt.permit is None:
            raise errors.Unavailable(f"The circuit breaker for '{attempt.target}' refused the call.")
        if attempt.engine.backend == Engine.Backend.REMOTE:
            served = await _remote(attempt, request)
        else:
            served = await _local(attempt, request)
    except errors.Overloaded as exc:  # full, not failing: counted by nobody, and the next target may take it
        await attempt.aabandon()
        attempt.logged("full", str(exc))
        raise
    except errors.TargetFailed as exc:
        await attempt.aend(False)
        attempt.logged("failed", str(exc))
        raise
    except errors.ApplicationError as exc:
        await attempt.aend(True)  # the client's fault: the target did its job
        attempt.logged("refused the request", str(exc))
        raise
    except BaseException:  # cancelled (the client went away) or a bug: free the slots, count nothing
        await attempt.aabandon()
        raise
    attempt.logged("answered")
    return served


async def _local(attempt: _Attempt, request: InferenceRequest) -> Served:
    run: Callable[..., AsyncGenerator[contract.Event, None]] = (
        grouping.run if attempt.engine.kind == Engine.Kind.EMBEDDING else dispatch.run)
    pinned = bool(attempt.candidate and attempt.candidate.target and attempt.candidate.target.worker)
    stream, payload = request.stream, request.payload
    tags = request.usage_tags(attempt.route.name if attempt.route else None)
    if tags is not None:  # the worker records the usage: it knows what it computed (usage/events.py)
        payload = cast(contract.InferPayload, {**payload, usage_events.USAGE_FIELD: tags})
    events = run(attempt.engine, {**payload, "stream": True} if stream else payload,
                 worker_id=attempt.worker, timeout=max(request.seconds_left(), 0.001), pinned=pinned)
    try:
        first = await anext(events)
    except StopAsyncIteration as exc:
        raise errors.TargetFailed(NO_RESULT) from exc
    if first["type"] == contract.ERROR:
        await events.aclose()
        raise contract.error_from(first)
    if stream:
        return Served(engine=attempt.engine, events=_counted(first, events, attempt))
    try:
        event: contract.Event = first
        while event["type"] not in contract.FINAL:
            event = await anext(events)
    except StopAsyncIteration as exc:
        raise errors.TargetFailed(NO_RESULT) from exc
    finally:
        await events.aclose()
    if event["type"] == contract.ERROR:
        raise contract.error_from(event)
    assert event["type"] == contract.DONE  # the final event, not an error
    await attempt.aend(True)
    return Served(engine=attempt.engine, result=event["result"])


NO_RESULT = "The worker ended the request without a result."


async def _counted(first: contract.Event, events: AsyncGenerator[contract.Event, None],
                   attempt: _Attempt) -> AsyncGenerator[contract.Event, None]:
    """The stream's events, the first included; the outcome is counted when it ends (as the target's
    success when it is the client's error; not at all when the client goes away first)."""
    ok = None
    try:
        event = first
        while True:
            yield event
            if event["type"] in contract.FINAL:
                ok = event["type"] == contract.DONE or not isinstance(
                    contract.error_from(cast(contract.ErrorEvent, event)), errors.TargetFailed)  # final, not done
                return
            event = await anext(events)
    except errors.ApplicationError as exc:
        ok = not isinstance(exc, errors.TargetFailed)
        yield contract.error_event(exc)
    except OUTAGES as exc:  # Blaze's own Redis lost mid-stream: no target's fault, and the 200 is sent
        yield contract.error_event(outage(exc))
    finally:
        await events.aclose()
        await attempt.aend(ok)


async def _remote(attempt: _Attempt, request: InferenceRequest) -> Served:
    left, stream = request.seconds_left(), request.stream and request.endpoint in STREAMED
    if left <= 0:
        raise errors.TimedOut("The request's deadline passed.")
    permit, attempt.permit = attempt.permit, None  # the host's breaker counts it, unless the first try answers
    try:
        response, attempt.permit = await remote.forward(
            attempt.engine, request.endpoint, request.relayed_body(), deadline=left, stream=stream,
            attempts=attempt.attempts, files=request.files, permit=permit)
    except breakers.BreakerOpen as exc:
        raise errors.Unavailable(str(exc)) from exc
    except UpstreamError as exc:
        raise errors.UpstreamFailed(str(exc)) from exc
    except UpstreamTimeout as exc:
        raise errors.TimedOut(f"The host did not answer in time ({exc}).") from exc
    except UpstreamUnreachable as exc:
        raise errors.UpstreamFailed(f"The host could not be reached ({exc}).") from exc
    tags = request.usage_tags(attempt.route.name if attempt.route else None)
    meter = None if tags is None else usage_events.RemoteMeter(tags, attempt.engine.name, request.body)
    if stream and response.status < 300:
        return Served(engine=attempt.engine, response=response, _done=attempt.aend, _meter=meter)
    try:
        body = await response.read()  # read already, unless a stream was refused (4xx)
    except (aiohttp.ClientError, TimeoutError) as exc:
        response.close()
        raise errors.UpstreamFailed(f"The host's answer broke off ({exc or type(exc).__name__}).") from exc
    if response.status < 300:
        try:
            orjson.loads(body)
        except orjson.JSONDecodeError as exc:  # a proxy's error page, say: the host failed, not the client
            raise errors.UpstreamFailed(f"The host answered {response.status} with a body that is not JSON: "
                                        f"{body[:80].decode(errors='replace')!r}") from exc
    await attempt.aend(True)
    if meter is not None and response.status < 300:
        meter.answer(body)
        await _recorded(meter, "answered")
    return Served(engine=attempt.engine, response=response, body=body)


async def _recorded(meter: usage_events.RemoteMeter, outcome: str) -> None:
    """Record a remote answer's usage; Redis away loses the record, never the answer."""
    try:
        await meter.arecord_once(uuid.uuid4().hex, outcome)
    except redis.RedisError as exc:
        log.warning("could not record the usage of a request to %s: %s", meter.engine, exc)
