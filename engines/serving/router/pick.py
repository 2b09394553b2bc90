"""From a route to one target: the live candidates, then the route's strategy.

Our own code rather than a library's: the choice depends on which worker holds which model (the
heartbeats) and on counts every web process shares in Redis, which no balancer library knows.
"""

import hashlib
import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any

from asgiref.sync import sync_to_async

from core import shared_state
from engines import heartbeats
from engines.models import Engine, Route, RouteTarget
from engines.serving.resilience import breaker, health, resilience_id
from engines.serving.router import state, strategies
from telemetry import request_log

log = logging.getLogger(__name__)

ReasonToSkip = Callable[["Candidate"], str]  # `unavailable(candidate)`: why it may not take a request, or ""

OPEN_BREAKER = "circuit breaker open"  # why a target is skipped


class NoTargetAvailable(Exception):
    """No target of the route can take the request; `reasons` says why each was skipped
    ({target label: reason})."""

    def __init__(self, route: Route, reasons: Mapping[str, str]) -> None:
        self.route, self.reasons = route, dict(reasons)
        if not route.enabled:
            message = f"Route '{route.name}' is disabled."
        elif not reasons:
            message = f"Route '{route.name}' has no targets."
        else:
            listed = "; ".join(f"{label}: {reason}" for label, reason in self.reasons.items())
            message = f"No target of route '{route.name}' is available ({listed})."
        super().__init__(message)


@dataclass(frozen=True)
class Candidate:
    """A target that may take the request now, with the numbers the strategies rank by.

    `workers`: for a local target, the live workers that may run it (the pinned one, else every live
    worker), those holding the model first; empty for a remote one. `cached_on`: those of them that
    hold it. `warm`: no model load is needed (remote, or cached on one of `workers`).
    """

    id: int
    engine: Engine | None = None
    target: RouteTarget | None = None
    weight: int = 1
    workers: tuple[str, ...] = ()
    cached_on: tuple[str, ...] = ()
    remote: bool = False
    in_flight: int = 0
    completed: int = 0
    latency: float | None = None
    error_rate: float = 0.0

    @property
    def warm(self) -> bool:
        return self.remote or bool(self.cached_on)


def resilience_id_of(target: RouteTarget) -> str:
    """The resilience id (breaker and health record) of a RouteTarget."""
    return resilience_id(target.engine.name, target.worker or None)


def resilience_check(route: Route) -> ReasonToSkip:
    """unavailable(candidate) → why the candidate may not take a request, or "": its circuit breaker
    is open, or the health checks find it UNHEALTHY (`health.down_by_check`). Both are read for all
    the route's enabled targets at once, two round trips in all."""
    names = _names(route)
    down = health.down_by_check(names)
    states = breaker.states(map(breaker.CircuitBreaker, names))
    return _unavailable(down, {name: OPEN_BREAKER for name, state in states.items() if state == breaker.OPEN})


def _names(route: Route) -> list[str]:
    return sorted({resilience_id_of(t) for t in _targets(route) if t.enabled})


def _unavailable(down: Collection[str], refused: Mapping[str, str]) -> ReasonToSkip:
    """unavailable(candidate) for `survey`: `down`, the names of targets UNHEALTHY by check;
    `refused`, {name: why its breaker refuses}."""

    def unavailable(candidate: Candidate) -> str:
        name = resilience_id_of(candidate.target)
        if name in down:
            return "unhealthy (failed its health checks)"
        return refused.get(name, "")

    return unavailable


def survey(route: Route, exclude: Collection[int] = (), unavailable: ReasonToSkip | None = None,
           live: list[dict[str, Any]] | None = None) -> tuple[list[Candidate], dict[str, str]]:
    """Every target of the route sorted into (candidates, {target label: why skipped}); the
    candidates do not carry their live numbers yet (see `candidates`). `unavailable(candidate)`:
    a reason to skip it, or "" (default: `resilience_check(route)`); `live`: the workers'
    heartbeats (default: read them when the route has a local target)."""
    if not route.enabled:
        return [], {}
    unavailable = unavailable or resilience_check(route)
    targets = _targets(route)
    if live is None:
        live = heartbeats.live_workers() if _has_local(targets) else []
    running = {worker["id"]: worker for worker in live if not worker["lost"]}
    lost = {worker["id"] for worker in live if worker["lost"]}
    found, skipped = [], {}
    for target in targets:
        engine, label = target.engine, str(target)
        if not target.enabled:
            skipped[label] = "target disabled"
            continue
        if not engine.enabled:
            skipped[label] = f"engine {engine.name} disabled"
            continue
        if target.pk in exclude:
            skipped[label] = "excluded (already tried)"
            continue
        remote = engine.backend == Engine.Backend.REMOTE
        workers: tuple[str, ...]
        cached_on: tuple[str, ...]
        workers = cached_on = ()
        if not remote:
            if target.worker and target.worker in lost:
                skipped[label] = f"worker {target.worker} is lost (no recent heartbeat)"
                continue
            if target.worker and target.worker not in running:
                skipped[label] = f"worker {target.worker} is not running"
                continue
            if not running:
                skipped[label] = "no live worker"
                continue
            eligible = [running[target.worker]] if target.worker else list(running.values())
            holding = {w["id"] for w in eligible if any(entry["engine"] == engine.name for entry in w["cache"])}
            workers = tuple(w["id"] for w in heartbeats.rank_workers(eligible, engine.name))
            cached_on = tuple(w for w in workers if w in holding)
        candidate = Candidate(id=target.pk, engine=engine, target=target, weight=target.weight,
                              workers=workers, cached_on=cached_on, remote=remote)
        reason = unavailable(candidate)
        if reason:
            skipped[label] = reason
            continue
        found.append(candidate)
    return found, skipped


def _has_local(targets: Collection[RouteTarget]) -> bool:
    # Heartbeats matter to local targets only: a route of remote hosts skips reading them.
    return any(t.engine.backend != Engine.Backend.REMOTE for t in targets)


def _targets(route: Route) -> Collection[RouteTarget]:
    """The route's targets with their engines: those prefetched with the route (the serving path
    does, saving a query per request), else from the database."""
    if "targets" in getattr(route, "_prefetched_objects_cache", {}):
        return route.targets.all()
    return route.targets.select_related("engine")


def _with_numbers(found: list[Candidate], numbers: Mapping[int, state.Numbers] | None = None) -> list[Candidate]:
    numbers = state.read(c.id for c in found) if numbers is None else numbers
    return [
        replace(c, in_flight=n.in_flight, completed=n.completed, latency=n.latency, error_rate=n.error_rate)
        for c, n in ((c, numbers[c.id]) for c in found)
    ]


def candidates(route: Route) -> list[Candidate]:
    """The targets that may take a request now, with their live numbers: enabled targets of an
    enabled route whose engine is enabled and whose breaker and health allow; a local one only while
    a worker it may run on is live (its pinned worker, else any)."""
    return _with_numbers(survey(route)[0])


async def alease_target(route: Route, client_key: str = "",
                        exclude: Collection[int] = ()) -> tuple[Candidate, str, breaker.Permit | None]:
    """The candidate the route's strategy picks for this client, counted in flight and its breaker
    asked, on the event loop's Redis client: (candidate, lease id for `state.release`, the breaker's
    Permit or None when it refused). `exclude`: target ids already tried for this request. Raises
    NoTargetAvailable, listing why each target was skipped.
    No trip to the thread pool, and two round trips: the breakers, the health checks, the targets'
    numbers, the route's turn and the client's sticky target are read at once, then the lease is
    taken, the breaker asked and a new sticky mapping written at once. A breaker read as closed
    refuses only when it opened in between, or its half-open trials filled up. One round trip when a
    single target is left to pick (`_alease_only`). A route with a local target reads the workers'
    heartbeats in a thread besides. Raises redis.RedisError when Redis does not answer."""
    targets = _targets(route)
    left = [t for t in targets if t.enabled and t.pk not in exclude]
    if len(left) == 1 and route.strategy != Route.Strategy.IP_HASH:
        return await _alease_only(route, targets, left[0], exclude)
    ranked = [t.pk for t in left]
    names = _names(route)
    breakers = [breaker.CircuitBreaker(name) for name in names]
    read_numbers = len(ranked) > 1 or route.strategy == Route.Strategy.IP_HASH

    parts = shared_state.Parts()

    def queue(pipe: Any) -> None:
        with parts.named("health", pipe):
            health.queue_checks(pipe, names)
        with parts.named("breakers", pipe):
            for each in breakers:
                each.queue(pipe, "peek")
        if read_numbers:
            with parts.named("numbers", pipe):
                state.queue_read(pipe, ranked)
            with parts.named("turn_and_sticky", pipe):
                state.ReadRouteState.queue_read(pipe, route, client_key)

    replies = parts.split(await shared_state.abatch(queue))
    down = health.down_from(names, replies["health"])
    refused = {each.target: OPEN_BREAKER for each, reply in zip(breakers, replies["breakers"])
               if each.read(reply) == breaker.OPEN}
    numbers = state.numbers_from(ranked, replies["numbers"]) if read_numbers else {}
    found, reasons = await _asurvey(route, targets, exclude, _unavailable(down, refused))
    if not found:
        raise NoTargetAvailable(route, reasons)
    request_log.note_skipped({label: why for label, why in reasons.items() if not why.startswith("excluded")})
    chosen, stuck = found[0], []
    if len(found) > 1 or route.strategy == Route.Strategy.IP_HASH:
        picked_state = state.ReadRouteState.of_replies(route, client_key, replies["turn_and_sticky"])
        chosen = strategies.pick(route.strategy, _with_numbers(found, numbers), picked_state, client_key)
        stuck = picked_state.stuck
    chosen_breaker = breaker.CircuitBreaker(resilience_id_of(chosen.target))
    taken, parts = {}, shared_state.Parts()

    def take(pipe: Any) -> None:
        taken["lease"] = state.queue_acquire(pipe, chosen.id)
        with parts.named("trial", pipe):
            taken["trial"] = chosen_breaker.queue_allow(pipe)
        for key, stuck_to in stuck:
            picked_state.queue_stick(pipe, key, stuck_to)

    [allowed] = parts.split(await shared_state.abatch(take))["trial"]
    try:
        permit = chosen_breaker.permit(taken["trial"], allowed)
    except breaker.BreakerOpen:
        permit = None
    return chosen, taken["lease"], permit


async def _alease_only(route: Route, targets: Collection[RouteTarget], only: RouteTarget,
                       exclude: Collection[int]) -> tuple[Candidate, str, breaker.Permit | None]:
    """alease_target() when one target is left and the strategy keeps nothing for the client: the
    pick is known before anything is read, so its lease is taken and its breaker asked with the read
    of its health, in one round trip. When it may not take the request after all (an UNHEALTHY check,
    a refusing breaker, no live worker), a second gives them back, and NoTargetAvailable says why."""
    chosen_breaker = breaker.CircuitBreaker(resilience_id_of(only))
    taken, parts = {}, shared_state.Parts()

    def queue(pipe: Any) -> None:
        with parts.named("health", pipe):
            health.queue_checks(pipe, [chosen_breaker.target])
        taken["lease"] = state.queue_acquire(pipe, only.pk)
        with parts.named("trial", pipe):
            taken["trial"] = chosen_breaker.queue_allow(pipe)

    replies = parts.split(await shared_state.abatch(queue))
    down = health.down_from([chosen_breaker.target], replies["health"])
    try:
        permit, refused = chosen_breaker.permit(taken["trial"], replies["trial"][0]), {}
    except breaker.BreakerOpen as exc:
        why = OPEN_BREAKER if exc.state == breaker.OPEN else "circuit breaker half-open, its trial calls taken"
        permit, refused = None, {chosen_breaker.target: why}
    found, reasons = await _asurvey(route, targets, exclude, _unavailable(down, refused))
    if not found:
        await state.awithdraw(only.pk, taken["lease"], uncount=True)
        if permit is not None:
            await chosen_breaker.arelease(permit)
        raise NoTargetAvailable(route, reasons)
    return found[0], taken["lease"], permit


async def _asurvey(route: Route, targets: Collection[RouteTarget], exclude: Collection[int],
                   unavailable: ReasonToSkip) -> tuple[list[Candidate], dict[str, str]]:
    """survey() for the serving path: a route with a local target reads the workers' heartbeats in a
    thread of the pool."""
    live = await sync_to_async(heartbeats.live_workers, thread_sensitive=False)() if _has_local(targets) else []
    return survey(route, exclude=set(exclude), unavailable=unavailable, live=live)


def client_key(*, api_key_id: int | None = None, session_key: str | None = None, ip: str | None = None) -> str:
    """The identity ip_hash keeps sticky: the API key, else the browser session (hashed: it is a
    credential), else the client address. Empty when none is known."""
    if api_key_id is not None:
        return f"key:{api_key_id}"
    if session_key:
        return f"session:{hashlib.sha256(session_key.encode()).hexdigest()[:32]}"
    return f"ip:{ip}" if ip else ""
