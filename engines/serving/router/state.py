"""The router's shared state, in Redis so that every web process balances as one.

Per target: requests in flight (leases, so that a web process dying mid-request cannot leave the
count high: a lease expires after BLAZE_REQUEST_TIMEOUT_SECONDS), counters, moving averages of
latency and error rate (updated atomically by `lua/release.lua`) and the recent latencies behind
p50/p95. Per route: the turn counter of the round-robin strategies and ip_hash's sticky mapping
(`RouteState`). Key names are in `core.shared_state`.
"""

import math
import random
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings

from core import shared_state
from engines.serving.router import strategies

if TYPE_CHECKING:
    from engines.models import Route

EWMA_ALPHA = 0.3  # weight of the newest outcome in the moving averages
RECENT_LATENCIES = 200  # latencies kept per target for p50/p95
LUA_DIR = Path(__file__).with_name("lua")
_RNG = random.Random()


ACQUIRE, RELEASE = shared_state.Script(LUA_DIR / "acquire.lua"), shared_state.Script(LUA_DIR / "release.lua")


def acquire(target_pk: int) -> str:
    """Count one request in flight on the target; returns its lease id (pass it to `release`)."""
    lease = uuid.uuid4().hex
    ACQUIRE.run(*_acquire_call(target_pk, lease))
    return lease


def queue_acquire(pipe: Any, target_pk: int) -> str:
    """acquire() put on a `shared_state.batch` pipeline; returns the lease id."""
    lease = uuid.uuid4().hex
    ACQUIRE.queue(pipe, *_acquire_call(target_pk, lease))
    return lease


def _acquire_call(target_pk: int, lease: str) -> tuple[list[str], list[Any]]:
    return (
        [shared_state.route_target_leases_key(target_pk), shared_state.route_target_stats_key(target_pk)],
        [lease, settings.BLAZE_REQUEST_TIMEOUT_SECONDS],
    )


def release(target_pk: int, latency: float, ok: bool, *, lease: str | None = None) -> None:
    """The request ended after `latency` seconds, successfully or not: it no longer counts in
    flight, and its outcome moves the target's averages. Without `lease`, the oldest is released."""
    RELEASE.run(*_release_call(target_pk, latency, ok, lease))


async def awithdraw(target_pk: int, lease: str, *, uncount: bool = False) -> None:
    """Give a lease back without an outcome: the request was abandoned (the client went away), or,
    `uncount`, never sent (its pick was undone), so it leaves the target's request count too."""

    def queue(pipe: Any) -> None:
        pipe.zrem(shared_state.route_target_leases_key(target_pk), lease)
        if uncount:
            pipe.hincrby(shared_state.route_target_stats_key(target_pk), "requests", -1)

    await shared_state.abatch(queue)


def queue_release(pipe: Any, target_pk: int, latency: float, ok: bool, *, lease: str | None = None) -> None:
    """release() put on a `shared_state.batch` pipeline."""
    RELEASE.queue(pipe, *_release_call(target_pk, latency, ok, lease))


def _release_call(target_pk: int, latency: float, ok: bool, lease: str | None) -> tuple[list[str], list[Any]]:
    return (
        [shared_state.route_target_leases_key(target_pk), shared_state.route_target_stats_key(target_pk),
         shared_state.route_target_latencies_key(target_pk)],
        [lease or "", repr(float(latency)), 1 if ok else 0, EWMA_ALPHA, RECENT_LATENCIES],
    )


@dataclass(frozen=True)
class Numbers:
    """A target's live numbers. `latency` is the moving average of successful requests' seconds
    (None before the first success); `completed` counts finished requests, failed ones included."""

    in_flight: int = 0
    requests: int = 0
    completed: int = 0
    errors: int = 0
    latency: float | None = None
    error_rate: float = 0.0


def read(target_pks: Iterable[int]) -> dict[int, Numbers]:
    """{target id: Numbers} for the given targets, in one round trip."""
    target_pks = list(target_pks)
    return numbers_from(target_pks, shared_state.batch(lambda pipe: queue_read(pipe, target_pks)))


def queue_read(pipe: Any, target_pks: Iterable[int]) -> None:
    """Put what `numbers_from` reads on a `shared_state.batch` pipeline: two replies per target."""
    now = time.time()
    for target_pk in target_pks:
        pipe.hgetall(shared_state.route_target_stats_key(target_pk))
        pipe.zcount(shared_state.route_target_leases_key(target_pk), f"({now}", "+inf")


def numbers_from(target_pks: Iterable[int], replies: Sequence[Any]) -> dict[int, Numbers]:
    """`read` of the replies `queue_read` queued."""
    numbers = {}
    for index, target_pk in enumerate(target_pks):
        raw, in_flight = replies[2 * index], replies[2 * index + 1]
        numbers[target_pk] = Numbers(
            in_flight=in_flight, requests=int(raw.get("requests", 0)), completed=int(raw.get("completed", 0)),
            errors=int(raw.get("errors", 0)),
            latency=float(raw["latency"]) if "latency" in raw else None,
            error_rate=float(raw.get("error_rate", 0.0)),
        )
    return numbers


def _percentile(ordered: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile of an ascending list; None when it is empty."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def target_stats(route: "Route") -> dict[int, dict[str, Any]]:
    """{target id: stats} for every target of the route (disabled ones too), for the pages and the
    status API: in flight, requests, share of the route's requests, error rate, latency average and
    p50/p95 of the recent successful requests (seconds)."""
    target_pks = list(route.targets.values_list("pk", flat=True))
    numbers = read(target_pks)
    pipe = shared_state.client().pipeline(transaction=False)
    for target_pk in target_pks:
        pipe.lrange(shared_state.route_target_latencies_key(target_pk), 0, -1)
    recent = dict(zip(target_pks, pipe.execute()))
    total = sum(n.requests for n in numbers.values())
    stats = {}
    for target_pk in target_pks:
        n, latencies = numbers[target_pk], sorted(float(value) for value in recent[target_pk])
        stats[target_pk] = {
            "in_flight": n.in_flight, "requests": n.requests, "completed": n.completed, "errors": n.errors,
            "share": n.requests / total if total else None,
            "error_rate": n.error_rate if n.completed else None,
            "latency_ewma": n.latency, "p50": _percentile(latencies, 0.50), "p95": _percentile(latencies, 0.95),
        }
    return stats


def forget_targets(target_pks: Iterable[int]) -> None:
    """Drop the state of removed targets."""
    keys = [
        make(target_pk) for target_pk in target_pks
        for make in (shared_state.route_target_stats_key, shared_state.route_target_leases_key,
                     shared_state.route_target_latencies_key)
    ]
    if keys:
        shared_state.client().delete(*keys)


def forget_route(route_id: int, target_pks: Iterable[int]) -> None:
    """Drop the state of a deleted route: its turn counter, sticky mappings and targets."""
    redis = shared_state.client()
    sticky = redis.scan_iter(shared_state.route_sticky_pattern(route_id), count=1000)
    keys = [shared_state.route_turn_key(route_id), *sticky]
    redis.delete(*keys)
    forget_targets(target_pks)


@dataclass(frozen=True)
class RouteState:
    """What one route's picks share across processes besides the targets' numbers: the turn counter
    (round robin) and the sticky mapping (ip_hash). `rng` draws the random strategies' choices."""

    route_id: int
    sticky_ttl: int = 300
    rng: random.Random = field(default=_RNG, compare=False)

    @classmethod
    def of(cls, route: "Route") -> "RouteState":
        return cls(route_id=route.pk, sticky_ttl=route.sticky_ttl_seconds)

    def next_turn(self) -> int:
        """1, 2, 3 … for this route, counted once across every process."""
        return shared_state.client().incr(shared_state.route_turn_key(self.route_id))

    def sticky(self, client_key: str) -> int | None:
        """The target id the client was given within the TTL, or None."""
        value = shared_state.client().get(shared_state.route_sticky_key(self.route_id, client_key))
        return int(value) if value is not None else None

    def stick(self, client_key: str, target_pk: int) -> None:
        """Remember the client's target for the TTL (from now: a mapping is not extended by use)."""
        self.queue_stick(shared_state.client(), client_key, target_pk)

    def queue_stick(self, pipe: Any, client_key: str, target_pk: int) -> None:
        pipe.set(shared_state.route_sticky_key(self.route_id, client_key), target_pk, ex=self.sticky_ttl)


@dataclass(frozen=True)
class ReadRouteState(RouteState):
    """A RouteState read ahead, in the pick's one round trip (`queue_read`): this pick's turn (taken
    whether or not the strategy needs it then) and the client's sticky target. A new mapping is kept
    in `stuck` for the caller to write with the lease."""

    turn: int | None = None
    mapped: int | None = None
    stuck: list[tuple[str, int]] = field(default_factory=list, compare=False)  # (client key, target id)

    @staticmethod
    def queue_read(pipe: Any, route: "Route", client_key: str) -> None:
        """Put what `of_replies` reads on a `shared_state.batch` pipeline."""
        if route.strategy in strategies.TAKE_TURNS:
            pipe.incr(shared_state.route_turn_key(route.pk))
        if route.strategy == "ip_hash" and client_key:
            pipe.get(shared_state.route_sticky_key(route.pk, client_key))

    @classmethod
    def of_replies(cls, route: "Route", client_key: str, replies: Iterable[Any]) -> "ReadRouteState":
        """The state `queue_read` read (`replies`: its replies)."""
        replies = list(replies)
        turn = mapped = None
        if route.strategy in strategies.TAKE_TURNS:
            turn = replies.pop(0)
        if route.strategy == "ip_hash" and client_key:
            value = replies.pop(0)
            mapped = int(value) if value is not None else None
        return cls(route_id=route.pk, sticky_ttl=route.sticky_ttl_seconds, turn=turn, mapped=mapped)

    def next_turn(self) -> int:
        assert self.turn is not None  # read for the strategies that take turns (TAKE_TURNS), the only callers
        return self.turn

    def sticky(self, client_key: str) -> int | None:
        return self.mapped

    def stick(self, client_key: str, target_pk: int) -> None:
        self.stuck.append((client_key, target_pk))
