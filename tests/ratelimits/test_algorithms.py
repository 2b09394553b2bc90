"""Each algorithm at its edges, against the real Redis (periods of about a second)."""

import time

import pytest

from engines.worker.status import batch_done
from ratelimits import algorithms
from ratelimits.models import RateLimitPolicy


def policy(algorithm, limit, period_seconds=1, burst=None, pk=1):
    return RateLimitPolicy(pk=pk, name="p", algorithm=algorithm, limit=limit, period_seconds=period_seconds,
                           burst=burst)


def admitted(policy, identity, tries, **kwargs):
    return sum(algorithms.hit(policy, identity, **kwargs).allowed for _ in range(tries))


def after_the_edge(policy):
    """One request opens a window, two more come late in it; then three right after the window ends.
    Returns which of the last three pass."""
    assert algorithms.hit(policy, "client").allowed
    time.sleep(0.75)
    assert [algorithms.hit(policy, "client").allowed for _ in range(3)] == [True, True, False]
    refused = algorithms.hit(policy, "client")
    time.sleep(refused.retry_after + 0.05)
    return [algorithms.hit(policy, "client").allowed for _ in range(3)]


def test_token_bucket_allows_its_burst_then_refuses_until_a_token_refills():
    bucket = policy("token_bucket", limit=2, burst=5)
    assert [algorithms.hit(bucket, "a").remaining for _ in range(5)] == [4, 3, 2, 1, 0]
    refused = algorithms.hit(bucket, "a")
    assert not refused.allowed and 0.3 < refused.retry_after <= 0.5
    time.sleep(refused.retry_after + 0.02)
    assert algorithms.hit(bucket, "a").allowed
    assert not algorithms.hit(bucket, "a").allowed


def test_token_bucket_counts_each_identity_apart():
    bucket = policy("token_bucket", limit=1, burst=1)
    assert algorithms.hit(bucket, "a").allowed and algorithms.hit(bucket, "b").allowed
    assert not algorithms.hit(bucket, "a").allowed


def test_token_bucket_reserves_a_turn_for_a_request_that_may_wait():
    bucket = policy("token_bucket", limit=10, burst=1)
    algorithms.hit(bucket, "a")
    delayed = algorithms.hit(bucket, "a", max_wait=0.5)
    assert delayed.allowed and 0.05 < delayed.wait <= 0.1
    assert algorithms.hit(bucket, "a", max_wait=0.5).wait > delayed.wait + 0.05


def test_fixed_window_lets_twice_the_limit_through_across_its_edge():
    assert after_the_edge(policy("fixed_window", limit=3)) == [True, True, True]


def test_sliding_window_weighs_the_previous_window_in_at_the_edge():
    assert after_the_edge(policy("sliding_window", limit=3)) == [True, False, False]


def test_fixed_window_reports_what_is_left_and_when_it_resets():
    window = policy("fixed_window", limit=3, period_seconds=10)
    algorithms.hit(window, "a")
    decision = algorithms.hit(window, "a")
    assert (decision.limit, decision.remaining) == (3, 1)
    assert 9 < decision.reset <= 10


def test_leaky_bucket_spaces_requests_evenly():
    bucket = policy("leaky_bucket", limit=5)
    assert algorithms.hit(bucket, "a").allowed
    refused = algorithms.hit(bucket, "a")
    assert not refused.allowed and 0.15 < refused.retry_after <= 0.2
    time.sleep(refused.retry_after + 0.01)
    assert algorithms.hit(bucket, "a").allowed


def test_leaky_bucket_queues_waiting_requests_one_interval_apart():
    bucket = policy("leaky_bucket", limit=5)
    waits = [algorithms.hit(bucket, "a", max_wait=0.7).wait for _ in range(4)]
    assert waits[0] == 0
    assert [later - earlier for earlier, later in zip(waits, waits[1:])] == [pytest.approx(0.2, abs=0.03)] * 3
    assert not algorithms.hit(bucket, "a", max_wait=0.7).allowed


@pytest.fixture
def engine_health(db):
    """outcome(errors, successes, seconds=0.01): record batches of engine `e1` as a worker does."""

    def outcome(errors=0, successes=0, seconds=0.01):
        if errors:
            batch_done("e1", errors, seconds, error=True)
        if successes:
            batch_done("e1", successes, seconds, error=False)

    return outcome


def test_adaptive_limit_shrinks_with_engine_errors_and_recovers(engine_health):
    adaptive = policy("adaptive", limit=10)
    assert admitted(adaptive, "a", 12, engines=["e1"]) == 10
    engine_health(errors=10, successes=10)
    assert admitted(adaptive, "b", 12, engines=["e1"]) == 5
    engine_health(successes=50)
    assert admitted(adaptive, "c", 12, engines=["e1"]) == 10


def test_adaptive_limit_never_falls_below_its_floor(engine_health, settings):
    settings.BLAZE_RATELIMIT_ADAPTIVE_FLOOR = 0.3
    engine_health(errors=20)
    assert admitted(policy("adaptive", limit=10), "a", 12, engines=["e1"]) == 3


def test_adaptive_limit_shrinks_when_batches_run_slower_than_the_target(engine_health, settings):
    settings.BLAZE_RATELIMIT_TARGET_LATENCY_SECONDS = 1.0
    adaptive = policy("adaptive", limit=10)
    engine_health(successes=1, seconds=0.5)
    assert algorithms.peek(adaptive, "a", engines=["e1"]).factor == 1
    time.sleep(algorithms.HEALTH_SAMPLE_SECONDS + 0.05)
    engine_health(successes=1, seconds=4.0)
    assert algorithms.peek(adaptive, "a", engines=["e1"]).factor == 0.25
    assert admitted(adaptive, "b", 5, engines=["e1"]) == 2


def test_counters_of_a_policy_can_be_listed():
    window, bucket = policy("sliding_window", limit=3, pk=1), policy("token_bucket", limit=3, pk=2)
    for identity in ("ip:10.0.0.1", "route:v1/chat/completions"):
        algorithms.hit(window, identity)
        algorithms.hit(bucket, identity)
    assert (algorithms.identities(window) == algorithms.identities(bucket)
            == ["ip:10.0.0.1", "route:v1/chat/completions"])


def test_adaptive_policies_follow_the_engines_that_ran_batches_until_one_is_deleted(
        db, django_capture_on_commit_callbacks):
    from accounts.audit import Actor
    from engines import services as engine_services
    from engines.models import Engine
    from ratelimits import selectors

    engine = Engine.objects.create(name="adaptive-follows", kind="llm", model="/nowhere")
    RateLimitPolicy.objects.create(name="adaptive", algorithm="adaptive", limit=10, period_seconds=1)
    assert "adaptive-follows" not in selectors.load_active_policies().engines  # no batch yet: no health
    batch_done("adaptive-follows", 4, 0.01, error=True)
    assert "adaptive-follows" in selectors.load_active_policies().engines
    with django_capture_on_commit_callbacks(execute=True):
        engine_services.engine_delete(actor=Actor.system("test"), engine=engine)
    assert "adaptive-follows" not in selectors.load_active_policies().engines
