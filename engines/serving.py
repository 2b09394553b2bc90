"""From the `model` a client names to an answer: a route's targets in the order its strategy picks,
failing over on a target's failure, or the engine of that name.

- `resolve(name, kind)` → Plan: the route of that name (a route wins over an engine of the same name),
  else the engine; raises ApiError for an unknown, disabled or wrong-kind model.
- `serve(plan, endpoint, ...)` → Served: the answer of the first target that gave one. A target's
  failure — a 5xx, a timeout, a refused connection, an open breaker, no live worker — moves the
  request to the next target the strategy picks among those not tried, while the request's deadline
  lasts; a 4xx is the client's and is returned as it is. When every target has failed or is
  unavailable the client gets a 503 listing why, not a hang.

Each attempt is counted in the router's shared state (in flight, latency, errors), in the target's
circuit breaker and in its health monitor. In a route each target is tried once per request, without
retries (moving on is the retry); the last target left, and an engine called by its own name, get
the retry policy of `resilience.retry` within the deadline. Streams commit to a target when its first
event (local) or its response headers (remote) arrive: a failure after that ends the stream with an
error, since the client already holds part of the answer.
"""

import logging
import time
from dataclasses import dataclass, field

import aiohttp
import redis
from django.conf import settings
from django.db.models import Prefetch

from blaze_site import shared_state
from monitoring import metrics

from . import dispatch, grouping, remote
from .models import Engine, Route, RouteTarget
from .resilience import breaker as breakers, health, target_id
from .resilience.retry import UpstreamError, UpstreamTimeout, UpstreamUnreachable
from .router import NoTargetAvailable, alease_target, resilience_id, state

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An answer for the client in OpenAI's error shape: status, message, the field at fault."""

    def __init__(self, status, message, param=None, code=None):
        super().__init__(message)
        self.status, self.param, self.code = status, param, code


class Failover(Exception):
    """The target failed in a way another target may not: try the next one. `status`: what the
    client gets when there is no other (an engine called by its own name)."""

    def __init__(self, message, status=503):
        super().__init__(message)
        self.status = status


@dataclass
class Plan:
    """What a `model` name resolves to: a route (its targets come prefetched with their engines), or
    an engine. `engine` validates the request: the engine itself, or the route's first enabled target
    (a route's targets are all of one kind)."""

    name: str
    engine: Engine
    route: Route | None = None


def resolve(name, kind):
    """The Plan for the model `name` of the endpoint's `kind`, or ApiError (the database is read here:
    call it thread-sensitive)."""
    if not isinstance(name, str) or not name:
        raise ApiError(400, "model: This field is required.", param="model")
    route = (
        Route.objects.filter(name=name)
        .prefetch_related(Prefetch("targets", queryset=RouteTarget.objects.select_related("engine")))
        .first()
    )
    if route is not None:
        if not route.enabled:
            raise ApiError(404, f"The route '{name}' is disabled.", param="model", code="model_not_found")
        targets = route.targets.all()
        if not targets:
            raise ApiError(503, f"The route '{name}' has no targets.", param="model")
        engine = next((t.engine for t in targets if t.enabled and t.engine.enabled), targets[0].engine)
        _check_kind(name, engine.kind, kind)
        return Plan(name=name, engine=engine, route=route)
    engine = Engine.objects.filter(name=name).first()
    if engine is None or not engine.enabled:
        raise ApiError(404, f"The model '{name}' does not exist or is disabled.", param="model", code="model_not_found")
    _check_kind(name, engine.kind, kind)
    return Plan(name=name, engine=engine)


def _check_kind(name, found, wanted):
    if found != wanted:
        raise ApiError(400, f"The model '{name}' is a {found} engine, not {wanted}.", param="model")


@dataclass
class Served:
    """One target's answer. Local: `result` (the worker's result) or, streaming, `events` (the worker's
    events, the first included). Remote: `response`, the upstream's aiohttp.ClientResponse (2xx or
    4xx) and its `body`, unless streaming: a streamed one is read through `chunks()`. `engine`: the
    engine that answered."""

    engine: Engine
    result: dict | None = None
    events: object = None
    response: aiohttp.ClientResponse | None = None
    body: bytes | None = None
    _done: object = field(default=None, repr=False)

    async def chunks(self):
        """A streamed remote body, chunk by chunk as the upstream sends it."""
        ok = None  # stays None when the client goes away mid-stream: the target is not at fault
        try:
            async for chunk in self.response.content.iter_any():
                yield chunk
            ok = True
        except (aiohttp.ClientError, TimeoutError) as exc:
            ok = False
            log.warning("stream from %s broke off: %s", self.engine.name, exc or type(exc).__name__)
        finally:
            self.response.release() if ok else self.response.close()
            await self._done(ok)


@dataclass
class _Attempt:
    """One try at one target: what to count when it ends."""

    engine: Engine
    worker: str | None = None
    route: Route | None = None
    candidate: object = None
    lease: str | None = None
    attempts: int | None = None
    permit: object = None  # the breaker permit whose outcome is still to be counted here (see `aend`)
    started: float = field(default_factory=time.monotonic)

    @property
    def target(self):
        return resilience_id(self.candidate.target) if self.candidate else target_id(self.engine.name)

    @property
    def watched(self):
        """Whether the target has a health record: a route's target, or a remote engine (a local
        engine called by its own name has none, and nothing else to count)."""
        return self.route is not None or self.engine.backend == Engine.Backend.REMOTE

    async def aend(self, ok):
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

        def queue(pipe):
            monitor.queue(pipe, ok, latency if ok else None)
            if self.route is not None:
                state.queue_release(pipe, self.candidate.id, latency, ok, lease=self.lease)
            if breaker is not None:
                breaker.queue(pipe, "success" if ok else "failure", self.permit)

        try:
            replies = await shared_state.abatch(queue)
        except Exception:  # noqa: BLE001 - bookkeeping must not turn an answer into an error
            log.exception("could not record the outcome of a request to %s", self.target)
            return
        monitor.read(replies[0], ok)
        if breaker is not None:
            breaker.read(replies[-1])
        if self.route is not None:
            metrics.ROUTE_REQUESTS.labels(self.route.name, str(self.candidate.target), "ok" if ok else "failed").inc()

    async def aabandon(self):
        if self.route is not None:
            await state.awithdraw(self.candidate.id, self.lease)
        if self.permit is not None:
            await breakers.CircuitBreaker(self.target).arelease(self.permit)


async def serve(plan, endpoint, payload, body, *, stream=False, client_key="", files=None):
    """The first answer a target of the plan gives (see the module's docstring). `payload`: the
    validated request a local engine runs; `body`: the client's JSON as sent, for a remote one."""
    ends = time.monotonic() + settings.BLAZE_REQUEST_TIMEOUT_SECONDS
    if plan.route is None:
        attempt = _Attempt(engine=plan.engine)
        try:
            return await _try(attempt, endpoint, payload, body, stream, files, ends)
        except Failover as exc:
            raise ApiError(exc.status, str(exc)) from exc
    tried, failures = [], {}
    while True:
        try:
            candidate, lease, permit = await alease_target(plan.route, client_key, exclude=tried)
        except NoTargetAvailable as exc:
            reasons = {**exc.reasons, **failures}
            raise ApiError(503, str(NoTargetAvailable(plan.route, reasons)), code="no_target_available") from exc
        except redis.RedisError as exc:  # the routes' shared counts, breakers and health live there
            log.error("route %s: Redis is unreachable: %s", plan.name, exc)
            raise ApiError(503, f"Route '{plan.name}' cannot pick a target: Blaze's shared state (Redis) is "
                                "unreachable.", code="no_target_available") from exc
        tried.append(candidate.id)
        last = not any(t.enabled and t.pk not in tried for t in plan.route.targets.all())
        attempt = _Attempt(engine=candidate.engine, worker=candidate.workers[0] if candidate.workers else None,
                           route=plan.route, candidate=candidate, lease=lease, permit=permit,
                           attempts=None if last else 1)
        try:
            return await _try(attempt, endpoint, payload, body, stream, files, ends)
        except Failover as exc:
            failures[str(candidate.target)] = str(exc)
            metrics.ROUTE_FAILOVERS.labels(plan.route.name).inc()
            log.warning("route %s: target %s failed, trying the next: %s", plan.name, candidate.target, exc)
        if time.monotonic() >= ends:
            listed = "; ".join(f"{label}: {reason}" for label, reason in failures.items())
            raise ApiError(504, f"No target of route '{plan.name}' answered within the deadline ({listed}).")


async def _try(attempt, endpoint, payload, body, stream, files, ends):
    try:
        if attempt.route is not None and attempt.permit is None:
            raise Failover(f"The circuit breaker for '{attempt.target}' refused the call.")
        if attempt.engine.backend == Engine.Backend.REMOTE:
            return await _remote(attempt, endpoint, body, stream, files, ends)
        return await _local(attempt, payload, stream, ends)
    except ApiError:
        await attempt.aend(True)  # the client's fault: the target did its job
        raise
    except Failover:
        await attempt.aend(False)
        raise
    except BaseException:  # cancelled (the client went away) or a bug: free the slots, count nothing
        await attempt.aabandon()
        raise


async def _local(attempt, payload, stream, ends):
    run = grouping.run if attempt.engine.kind == Engine.Kind.EMBEDDING else dispatch.run
    events = run(attempt.engine, {**payload, "stream": True} if stream else payload,
                 worker_id=attempt.worker, timeout=max(ends - time.monotonic(), 0.001))
    try:
        first = await anext(events)
    except StopAsyncIteration as exc:
        raise Failover("The worker ended the request without a result.", 500) from exc
    except dispatch.DispatchError as exc:
        raise _local_failure(exc.status, str(exc), exc.param) from exc
    if first["type"] == "error":
        await events.aclose()
        raise _local_failure(first["status"], first["message"], first.get("param"))
    if stream:
        return Served(engine=attempt.engine, events=_counted(first, events, attempt))
    try:
        event = first
        while event["type"] not in ("done", "error"):
            event = await anext(events)
    except (StopAsyncIteration, dispatch.DispatchError) as exc:
        status = exc.status if isinstance(exc, dispatch.DispatchError) else 500
        raise Failover(str(exc) or "The worker ended the request without a result.", status) from exc
    finally:
        await events.aclose()
    if event["type"] == "error":
        raise _local_failure(event["status"], event["message"], event.get("param"))
    await attempt.aend(True)
    return Served(engine=attempt.engine, result=event["result"])


def _local_failure(status, message, param):
    """A worker's error: the client's (4xx) is returned as it is, the target's (5xx) fails over."""
    return ApiError(status, message, param) if status < 500 else Failover(message, status)


async def _counted(first, events, attempt):
    """The stream's events, the first included; the outcome is counted when it ends (as the target's
    success when it is the client's error, a 4xx; not at all when the client goes away first)."""
    ok = None
    try:
        event = first
        while True:
            yield event
            if event["type"] in ("done", "error"):
                ok = event["type"] == "done" or event["status"] < 500
                return
            event = await anext(events)
    except dispatch.DispatchError as exc:
        ok = exc.status < 500
        yield {"type": "error", "status": exc.status, "message": str(exc), "param": exc.param}
    finally:
        await events.aclose()
        await attempt.aend(ok)


async def _remote(attempt, endpoint, body, stream, files, ends):
    left = ends - time.monotonic()
    if left <= 0:
        raise Failover("The request's deadline passed.", 504)
    permit, attempt.permit = attempt.permit, None  # the host's breaker counts it, unless the first try answers
    try:
        response, attempt.permit = await remote.forward(attempt.engine, endpoint, body, deadline=left, stream=stream,
                                                        attempts=attempt.attempts, files=files, permit=permit)
    except breakers.BreakerOpen as exc:
        raise Failover(str(exc)) from exc
    except UpstreamError as exc:
        raise Failover(str(exc), 502) from exc
    except UpstreamTimeout as exc:
        raise Failover(f"The host did not answer in time ({exc}).", 504) from exc
    except UpstreamUnreachable as exc:
        raise Failover(f"The host could not be reached ({exc}).", 502) from exc
    if stream and response.status < 300:
        return Served(engine=attempt.engine, response=response, _done=attempt.aend)
    try:
        body = await response.read()  # read already, unless a stream was refused (4xx)
    except (aiohttp.ClientError, TimeoutError) as exc:
        response.close()
        raise Failover(f"The host's answer broke off ({exc or type(exc).__name__}).", 502) from exc
    await attempt.aend(True)
    return Served(engine=attempt.engine, response=response, body=body)
