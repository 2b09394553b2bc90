"""Retries: 5xx, timeouts and refused connections are tried again with jittered backoff, 4xx never, and
the whole stays within the caller's deadline. Against a real loopback upstream."""

import asyncio
import time
import uuid

import pytest

from core.retry import UpstreamError, UpstreamTimeout, UpstreamUnreachable, is_retriable, retrying
from engines.serving.resilience import http
from engines.serving.resilience.breaker import BreakerOpen, CircuitBreaker
from tests.upstream import run

FAST = dict(attempts=3, deadline=10)


@pytest.fixture(autouse=True)
def _short_waits(settings):
    settings.BLAZE_RETRY_BASE_SECONDS, settings.BLAZE_RETRY_MAX_DELAY_SECONDS = 0.01, 0.05


@pytest.mark.parametrize("exc, retried", [
    (UpstreamError(503), True),
    (UpstreamTimeout("slow"), True),
    (UpstreamUnreachable("refused"), True),
    (UpstreamError(404), False),
    (ValueError("a bug"), False),
    (BreakerOpen("t", "open", 3), False),
])
def test_what_is_retriable(exc, retried):
    assert is_retriable(exc) is retried


def test_a_500_is_retried_until_it_succeeds(upstream):
    path = upstream.path("flaky-2")
    response = run(http.request("GET", upstream.url + path, **FAST))
    assert response.status == 200
    assert upstream.hits[path] == 3


def test_a_400_is_returned_at_once_never_retried(upstream):
    path = upstream.path("bad")
    response = run(http.request("GET", upstream.url + path, **FAST))
    assert response.status == 400
    assert upstream.hits[path] == 1


def test_a_500_that_persists_raises_upstream_error_after_max_attempts(upstream):
    path = upstream.path("fail")
    with pytest.raises(UpstreamError) as failed:
        run(http.request("POST", upstream.url + path, json={"x": 1}, **FAST))
    assert failed.value.status == 500 and "boom" in failed.value.body
    assert upstream.hits[path] == 3


def test_a_read_timeout_is_retried(upstream):
    path = upstream.path("slow")
    with pytest.raises(UpstreamTimeout):
        run(http.request("GET", upstream.url + path, attempts=2, deadline=10, timeout=http.timeouts(read=0.2)))
    assert upstream.hits[path] == 2


def test_a_refused_connection_is_retried(refused_url):
    attempts = 0

    async def call():
        nonlocal attempts
        async for attempt in retrying(deadline=5, attempts=3):
            with attempt:
                attempts += 1
                await http.request("GET", refused_url, attempts=1)

    with pytest.raises(UpstreamUnreachable):
        run(call())
    assert attempts == 3


def test_a_connection_dropped_mid_answer_is_retried(upstream):
    path = upstream.path("drop")
    with pytest.raises(UpstreamUnreachable):
        run(http.request("GET", upstream.url + path, **FAST))
    assert upstream.hits[path] == 3


def test_retries_stop_at_the_deadline(upstream):
    path = upstream.path("fail")
    started = time.monotonic()
    with pytest.raises(UpstreamError):
        run(http.request("GET", upstream.url + path, attempts=1000, deadline=0.5))
    assert time.monotonic() - started < 0.5 + 0.25
    assert upstream.hits[path] > 3


def test_the_last_attempt_is_cut_to_what_is_left_of_the_deadline(upstream):
    path = upstream.path("slow")  # answers after 1 s; the read timeout allows 300
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        run(http.request("GET", upstream.url + path, attempts=5, deadline=0.4))
    assert time.monotonic() - started < 0.4 + 0.25


def waits(policy, error):
    """The sleeps `policy` takes between attempts that all raise `error` (recorded, not slept)."""
    slept = []

    async def record(seconds):
        slept.append(seconds)

    async def always_failing():
        async for attempt in policy.copy(sleep=record):
            with attempt:
                raise error

    with pytest.raises(type(error)):
        asyncio.run(always_failing())
    return slept


def test_waits_are_full_jitter_bounded_by_max_delay():
    slept = waits(retrying(deadline=3600, attempts=30, base=1, max_delay=0.05), UpstreamError(502))
    assert len(slept) == 29
    assert all(0 <= seconds <= 0.05 for seconds in slept)
    assert len(set(slept)) > 1  # random, not a fixed step


def test_waits_grow_exponentially_below_the_cap():
    slept = waits(retrying(deadline=3600, attempts=6, base=0.01, max_delay=100), UpstreamUnreachable("refused"))
    assert all(seconds <= 0.01 * 2 ** n for n, seconds in enumerate(slept))


def test_each_attempt_reports_to_the_breaker_and_an_open_breaker_ends_the_retries(upstream, clock):
    breaker = CircuitBreaker(f"retry-{uuid.uuid4().hex[:8]}", failure_threshold=2, clock=clock)
    path = upstream.path("fail")
    with pytest.raises(BreakerOpen):
        run(http.request("GET", upstream.url + path, attempts=5, deadline=10, breaker=breaker))
    assert upstream.hits[path] == 2
    assert breaker.state() == "open"


def test_a_first_try_answered_on_the_callers_permit_is_left_for_the_caller_to_count(upstream):
    breaker = CircuitBreaker(f"owed-{uuid.uuid4().hex[:8]}")
    permit = breaker.allow()
    response, owed = run(http.request_owing("GET", upstream.url + upstream.path("ok"), attempts=3, deadline=10,
                                            breaker=breaker, permit=permit))
    assert response.status == 200 and owed is permit
    assert breaker.snapshot()["window_calls"] == 0  # nothing counted yet: the caller owes that success
    breaker.record_success(owed)
    assert breaker.snapshot()["window_calls"] == 1


def test_after_a_failed_first_try_every_try_is_counted_here_and_nothing_is_owed(upstream):
    breaker = CircuitBreaker(f"owed-{uuid.uuid4().hex[:8]}")
    response, owed = run(http.request_owing("GET", upstream.url + upstream.path("flaky-1"), attempts=3, deadline=10,
                                            breaker=breaker, permit=breaker.allow()))
    assert response.status == 200 and owed is None
    snapshot = breaker.snapshot()
    assert (snapshot["window_calls"], snapshot["window_failures"]) == (2, 1)
