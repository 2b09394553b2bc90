"""The router: each strategy's distribution, state shared in Redis (across processes too), the
candidates a route has now, cache preference, and the error when none is left."""

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from django.conf import settings

from engines.models import Engine, Route, RouteTarget
from engines.serving.resilience.breaker import CircuitBreaker
from engines.serving.router import (
    Candidate,
    NoTargetAvailable,
    alease_target,
    candidates,
    resilience_id_of,
    state,
    strategies,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def make_route(db):
    """make_route(strategy, weights=(1, 1, 1), **fields) → a route over remote engines far-0, far-1 …"""

    def make(strategy, weights=(1, 1, 1), **fields):
        route = Route.objects.create(name="chat", strategy=strategy, **fields)
        for index, weight in enumerate(weights):
            engine = Engine.objects.create(name=f"far-{index}", kind="llm", backend="remote",
                                           base_url=f"https://h{index}.example.com/v1")
            RouteTarget.objects.create(route=route, engine=engine, weight=weight)
        return route

    return make


@pytest.fixture
def workers(monkeypatch):
    """workers(heartbeat, …) makes these the live workers the router sees."""

    def set_workers(*heartbeats):
        monkeypatch.setattr("engines.heartbeats.live_workers", lambda: [
            {"id": "w1", "lost": False, "in_flight": 0, "cache": [], **beat} for beat in heartbeats
        ])

    set_workers()
    return set_workers


def fetched(route):
    """The route as the serving path holds it: its targets and their engines prefetched."""
    return Route.objects.prefetch_related("targets__engine").get(pk=route.pk)


def picked(route, count=1, client_key="", exclude=()):
    """`count` picks as the serving path makes them (alease_target, on one event loop), each lease and
    breaker permit given back at once: what the strategy chose, with no request left in flight."""
    route = fetched(route)

    async def pick_all():
        chosen = []
        for _ in range(count):
            candidate, lease, permit = await alease_target(route, client_key, exclude)
            await state.awithdraw(candidate.id, lease, uncount=True)
            if permit is not None:
                await CircuitBreaker(resilience_id_of(candidate.target)).arelease(permit)
            chosen.append(candidate)
        return chosen

    return asyncio.run(pick_all())


def pick(route, **kwargs):
    return picked(route, **kwargs)[0]


def picks(route, count, **kwargs):
    return [candidate.engine.name for candidate in picked(route, count, **kwargs)]


def served(route, name, latency, ok=True, times=1):
    target = route.targets.get(engine__name=name)
    for _ in range(times):
        lease = state.acquire(target.pk)
        state.release(target.pk, latency, ok, lease=lease)


def test_round_robin_is_exact(make_route):
    route = make_route("round_robin")
    chosen = picks(route, 30)
    assert Counter(chosen) == {"far-0": 10, "far-1": 10, "far-2": 10}
    assert chosen[:6] == ["far-0", "far-1", "far-2", "far-0", "far-1", "far-2"]


def test_weighted_round_robin_is_exact_per_cycle_and_interleaved(make_route):
    route = make_route("weighted_round_robin", weights=(5, 1, 1))
    assert picks(route, 7) == ["far-0", "far-0", "far-1", "far-0", "far-2", "far-0", "far-0"]
    assert Counter(picks(route, 70)) == {"far-0": 50, "far-1": 10, "far-2": 10}


def test_least_connections_spreads_held_requests(make_route):
    route = make_route("least_connections")
    held = [pick(route) for _ in range(6)]
    for candidate in held:
        state.acquire(candidate.id)  # never released: still in flight
    assert Counter(c.engine.name for c in held) == {"far-0": 2, "far-1": 2, "far-2": 2}


def test_least_connections_goes_where_requests_finished(make_route):
    route = make_route("least_connections", weights=(1, 1))
    first, second = pick(route), None
    lease = state.acquire(first.id)
    second = pick(route)
    state.acquire(second.id)
    state.release(first.id, 0.1, True, lease=lease)
    assert second.id != first.id
    assert pick(route).id == first.id


def test_least_response_time_tries_each_then_prefers_the_faster(make_route):
    route = make_route("least_response_time")
    assert sorted(picks(route, 3)) == ["far-0", "far-1", "far-2"]  # untried ones first (nothing completed yet)
    served(route, "far-0", 0.30)
    served(route, "far-1", 0.02)
    served(route, "far-2", 0.10)
    assert set(picks(route, 10)) == {"far-1"}


def test_least_response_time_follows_the_moving_average(make_route):
    route = make_route("least_response_time", weights=(1, 1))
    served(route, "far-0", 0.05)
    served(route, "far-1", 0.10)
    served(route, "far-0", 0.50, times=3)  # far-0 slowed down
    assert pick(route).engine.name == "far-1"


def test_ip_hash_keeps_a_client_on_one_target(make_route):
    route = make_route("ip_hash")
    assert len(set(picks(route, 20, client_key="ip:10.0.0.1"))) == 1
    spread = {pick(route, client_key=f"ip:10.0.0.{n}").engine.name for n in range(30)}
    assert spread == {"far-0", "far-1", "far-2"}


def test_ip_hash_replaces_a_gone_target_and_keeps_the_replacement_for_the_ttl(make_route):
    route = make_route("ip_hash", weights=(1, 1), sticky_ttl_seconds=1)
    first = pick(route, client_key="key:7")
    RouteTarget.objects.filter(pk=first.id).update(enabled=False)
    replacement = pick(route, client_key="key:7")
    assert replacement.id != first.id
    RouteTarget.objects.filter(pk=first.id).update(enabled=True)
    assert pick(route, client_key="key:7").id == replacement.id  # sticky while the mapping lives
    time.sleep(1.2)
    assert pick(route, client_key="key:7").id == first.id  # expired: the client's own hash again


def test_adaptive_shifts_traffic_away_from_a_slow_target(make_route):
    route = make_route("adaptive", weights=(1, 1))
    served(route, "far-0", 0.05, times=3)
    served(route, "far-1", 0.50, times=3)
    share = Counter(picks(route, 400))["far-1"] / 400
    assert share < 0.2  # weight ÷ latency: 1/0.5 against 1/0.05 → about 9 %


def test_adaptive_shifts_traffic_away_from_an_erroring_target(make_route):
    route = make_route("adaptive", weights=(1, 1))
    served(route, "far-0", 0.1, times=4)
    served(route, "far-1", 0.1, times=2)
    served(route, "far-1", 0.1, ok=False, times=2)
    share = Counter(picks(route, 400))["far-1"] / 400
    assert share < 0.25  # error rate ≈ 0.51 → weight ÷ (1 + 10 × 0.51): about 14 %


def remote_candidates(*weights):
    return [Candidate(id=index + 1, weight=weight, remote=True) for index, weight in enumerate(weights)]


def test_random_is_roughly_uniform():
    route_state = state.RouteState(route_id=1)
    chosen = Counter(strategies.pick("random", remote_candidates(1, 1, 1), route_state).id for _ in range(3000))
    assert all(850 < chosen[target] < 1150 for target in (1, 2, 3))


def test_weighted_random_follows_the_weights():
    route_state = state.RouteState(route_id=1)
    chosen = Counter(strategies.pick("weighted_random", remote_candidates(1, 3), route_state).id for _ in range(2000))
    assert 0.70 < chosen[2] / 2000 < 0.80


def test_weighted_round_robin_schedule_reduces_by_the_common_divisor():
    assert strategies.smooth_schedule(((1, 200), (2, 100))) == (1, 2, 1)


def test_round_robin_stays_exact_across_two_processes(make_route):
    route = make_route("round_robin")
    code = (
        "import django, json; django.setup()\n"
        "from engines.serving.router import Candidate, state, strategies\n"
        f"route = state.RouteState(route_id={route.pk})\n"
        f"cands = [Candidate(id=i, remote=True) for i in {[t.pk for t in route.targets.all()]}]\n"
        "print(json.dumps([strategies.pick('round_robin', cands, route).id for _ in range(300)]))\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "blaze_site.settings", "BLAZE_REDIS_PREFIX": settings.REDIS_PREFIX,
           "REDIS_URL": settings.REDIS_URL}
    other = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    here = [candidate.id for candidate in picked(route, 300)]
    there = json.loads(other.communicate(timeout=60)[0])
    assert other.returncode == 0
    assert sorted(Counter(here + there).values()) == [200, 200, 200]


def test_among_equals_the_target_already_in_a_cache_wins(db, workers):
    workers({"id": "w1", "cache": [{"engine": "warm"}]}, {"id": "w2"})
    route = Route.objects.create(name="chat", strategy="least_connections")
    for name in ("cold", "warm"):
        RouteTarget.objects.create(route=route, engine=Engine.objects.create(name=name, kind="llm", model="m"))
    assert set(picks(route, 5)) == {"warm"}
    warm = next(c for c in candidates(route) if c.engine.name == "warm")
    assert (warm.cached_on, warm.workers) == (("w1",), ("w1", "w2"))


def test_warmth_does_not_override_round_robin(db, workers):
    workers({"id": "w1", "cache": [{"engine": "warm"}]})
    route = Route.objects.create(name="chat", strategy="round_robin")
    for name in ("cold", "warm"):
        RouteTarget.objects.create(route=route, engine=Engine.objects.create(name=name, kind="llm", model="m"))
    assert Counter(picks(route, 4)) == {"cold": 2, "warm": 2}


def test_a_pinned_target_follows_its_worker(db, workers):
    route = Route.objects.create(name="chat")
    engine = Engine.objects.create(name="tiny", kind="llm", model="m")
    RouteTarget.objects.create(route=route, engine=engine, worker="w2")
    workers({"id": "w1"}, {"id": "w2"})
    assert [c.workers for c in candidates(route)] == [("w2",)]
    workers({"id": "w1"}, {"id": "w2", "lost": True})
    assert candidates(route) == []


def test_no_target_available_says_why_for_each(db, workers):
    workers({"id": "w1", "lost": True})
    route = Route.objects.create(name="chat")
    local = Engine.objects.create(name="tiny", kind="llm", model="m")
    RouteTarget.objects.create(route=route, engine=local)
    RouteTarget.objects.create(route=route, engine=local, worker="w1")
    off = Engine.objects.create(name="off", kind="llm", backend="remote", base_url="https://a.example.com/v1")
    RouteTarget.objects.create(route=route, engine=off, enabled=False)
    tried = Engine.objects.create(name="tried", kind="llm", backend="remote", base_url="https://b.example.com/v1")
    tried_target = RouteTarget.objects.create(route=route, engine=tried)
    broken = Engine.objects.create(name="broken", kind="llm", backend="remote", base_url="https://c.example.com/v1")
    RouteTarget.objects.create(route=route, engine=broken)
    opened = CircuitBreaker("broken", failure_threshold=1)
    opened.record_failure(opened.allow())
    with pytest.raises(NoTargetAvailable) as caught:
        pick(route, exclude=[tried_target.pk])
    assert caught.value.reasons == {
        "tiny": "no live worker", "tiny@w1": "worker w1 is lost (no recent heartbeat)", "off": "target disabled",
        "tried": "excluded (already tried)", "broken": "circuit breaker open",
    }
    assert str(caught.value).startswith("No target of route 'chat' is available (tiny: no live worker;")


def test_a_disabled_route_has_no_target(make_route):
    route = make_route("round_robin", enabled=False)
    with pytest.raises(NoTargetAvailable, match="Route 'chat' is disabled."):
        pick(route)


def test_a_lease_left_by_a_dead_process_expires(make_route, settings):
    settings.BLAZE_REQUEST_TIMEOUT_SECONDS = 0.3
    route = make_route("least_connections", weights=(1,))
    target = route.targets.get()
    state.acquire(target.pk)
    assert state.read([target.pk])[target.pk].in_flight == 1
    time.sleep(0.4)
    assert state.read([target.pk])[target.pk].in_flight == 0


def test_target_stats_show_share_latency_percentiles_and_errors(make_route):
    route = make_route("round_robin", weights=(1, 1))
    for latency in (0.01, 0.02, 0.03, 0.04, 0.10):
        served(route, "far-0", latency)
    served(route, "far-1", 0.5, ok=False)
    far0, far1 = (state.target_stats(route)[route.targets.get(engine__name=name).pk] for name in ("far-0", "far-1"))
    assert (far0["share"], far0["p50"], far0["p95"], far0["error_rate"]) == (5 / 6, 0.03, 0.10, 0.0)
    assert (far1["errors"], far1["error_rate"], far1["p50"]) == (1, 1.0, None)


def leased(route, count, client_key=""):
    """`count` picks as the serving path makes them (alease_target, on one event loop): (engine names, leases)."""
    route = fetched(route)

    async def pick_all():
        return [await alease_target(route, client_key) for _ in range(count)]

    chosen = asyncio.run(pick_all())
    return [candidate.engine.name for candidate, _, _ in chosen], [lease for _, lease, _ in chosen]


def test_the_serving_pick_takes_turns_and_counts_each_pick_in_flight(make_route):
    route = make_route("weighted_round_robin", weights=(5, 1, 1))
    names, leases = leased(route, 14)
    assert names == ["far-0", "far-0", "far-1", "far-0", "far-2", "far-0", "far-0"] * 2
    numbers = state.read(t.pk for t in route.targets.all())
    assert sorted(n.in_flight for n in numbers.values()) == [2, 2, 10] and len(set(leases)) == 14


def test_the_serving_pick_keeps_its_turn_in_redis_across_event_loops(make_route):
    route = make_route("round_robin")
    assert picks(route, 1) + leased(route, 2)[0] + picks(route, 1) == ["far-0", "far-1", "far-2", "far-0"]


def test_the_serving_pick_keeps_a_client_sticky_and_writes_the_mapping(make_route):
    route = make_route("ip_hash", weights=(1, 1, 1))
    names, _ = leased(route, 5, client_key="key:9")
    assert len(set(names)) == 1
    assert pick(route, client_key="key:9").engine.name == names[0]
    first = route.targets.get(engine__name=names[0])
    RouteTarget.objects.filter(pk=first.pk).update(enabled=False)
    moved, _ = leased(route, 1, client_key="key:9")
    RouteTarget.objects.filter(pk=first.pk).update(enabled=True)
    assert moved != names[:1] and leased(route, 1, client_key="key:9")[0] == moved  # the new mapping was written


def test_the_serving_pick_skips_an_open_breaker_and_says_why_when_none_is_left(make_route):
    route = make_route("round_robin", weights=(1, 1))
    broken = CircuitBreaker("far-1", failure_threshold=1)
    broken.record_failure(broken.allow())
    assert set(leased(route, 4)[0]) == {"far-0"}
    with pytest.raises(NoTargetAvailable) as caught:
        asyncio.run(alease_target(fetched(route), exclude=[route.targets.get(engine__name="far-0").pk]))
    assert caught.value.reasons == {"far-0": "excluded (already tried)", "far-1": "circuit breaker open"}


def half_open(*names):
    for name in names:
        a_minute_ago = CircuitBreaker(name, failure_threshold=1, clock=lambda: time.time() - 60)
        a_minute_ago.record_failure(a_minute_ago.allow())  # opened then: half-open now (reset after 30 s)


def test_the_serving_pick_asks_the_breaker_and_a_half_open_one_lets_one_trial_through(make_route):
    route = fetched(make_route("round_robin", weights=(1, 1)))
    half_open("far-0", "far-1")

    async def three_picks():
        return [await alease_target(route) for _ in range(3)]

    (first, _, trial0), (second, _, trial1), (third, _, refused) = asyncio.run(three_picks())
    assert [first.engine.name, second.engine.name, third.engine.name] == ["far-0", "far-1", "far-0"]
    assert trial0.trial and trial1.trial and refused is None  # BLAZE_BREAKER_HALF_OPEN_MAX_CALLS = 1


def test_a_route_s_last_target_is_leased_in_one_round_trip_and_given_back_when_its_breaker_refuses(
        make_route, monkeypatch):
    from core import shared_state

    route = fetched(make_route("round_robin", weights=(1,)))
    half_open("far-0")
    trips = []
    batch = shared_state.abatch

    async def counted(queue):
        trips.append(queue)
        return await batch(queue)

    monkeypatch.setattr(shared_state, "abatch", counted)

    async def two_picks():
        granted = await alease_target(route)
        sent = len(trips)
        with pytest.raises(NoTargetAvailable) as caught:
            await alease_target(route)
        return granted, sent, caught.value

    (candidate, lease, trial), trips_to_grant, refusal = asyncio.run(two_picks())
    assert candidate.engine.name == "far-0" and lease and trial.trial and trips_to_grant == 1
    assert refusal.reasons == {"far-0": "circuit breaker half-open, its trial calls taken"}
    numbers = state.read([candidate.id])[candidate.id]
    assert (numbers.in_flight, numbers.requests) == (1, 1)  # the refused pick's lease was given back


def test_a_route_s_last_target_failing_its_health_checks_is_skipped_and_its_lease_given_back(make_route):
    from engines.serving.resilience.health import HealthMonitor

    route = fetched(make_route("least_connections", weights=(1,)))
    monitor = HealthMonitor("far-0")
    for _ in range(settings.BLAZE_HEALTH_UNHEALTHY_AFTER):
        monitor.record_check(False, None, detail="connection refused")
    with pytest.raises(NoTargetAvailable) as caught:
        asyncio.run(alease_target(route))
    assert caught.value.reasons == {"far-0": "unhealthy (failed its health checks)"}
    target = route.targets.get()
    numbers = state.read([target.pk])[target.pk]
    assert (numbers.in_flight, numbers.requests) == (0, 0)
