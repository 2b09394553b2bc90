"""The circuit breaker opens on consecutive failures or a failure rate, probes after reset_timeout with
a limited number of trials, and every process sharing Redis sees the same breaker."""

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.conf import settings
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, multiple, rule

from engines.serving.resilience.breaker import CLOSED, HALF_OPEN, OPEN, BreakerOpen, CircuitBreaker, snapshots
from telemetry import metrics
from tests.servers import ROOT, free_port

from .conftest import Clock


def make(clock, **overrides):
    options = dict(failure_threshold=3, failure_rate=None, window=10, min_calls=4, reset_timeout=10,
                   success_threshold=2, half_open_max_calls=1, clock=clock)
    return CircuitBreaker(f"t-{uuid.uuid4().hex[:8]}", **{**options, **overrides})


def fail(breaker, times=1):
    for _ in range(times):
        breaker.record_failure(breaker.allow())


def test_a_new_breaker_is_closed_and_lets_calls_through(clock):
    breaker = make(clock)
    assert breaker.state() == CLOSED
    assert breaker.allow()


def test_it_opens_at_the_consecutive_failure_threshold(clock):
    breaker = make(clock)
    fail(breaker, 2)
    assert breaker.state() == CLOSED
    fail(breaker)
    assert breaker.state() == OPEN
    with pytest.raises(BreakerOpen) as refused:
        breaker.allow()
    assert refused.value.retry_after == 10


def test_a_success_restarts_the_consecutive_count(clock):
    breaker = make(clock)
    fail(breaker, 2)
    breaker.record_success(breaker.allow())
    fail(breaker, 2)
    assert breaker.state() == CLOSED


def test_it_opens_on_the_failure_rate_over_the_window_once_min_calls_are_counted(clock):
    breaker = make(clock, failure_threshold=100, failure_rate=0.5, window=6, min_calls=4)
    for ok in (True, False, True):
        (breaker.record_success if ok else breaker.record_failure)()
    assert breaker.state() == CLOSED  # 1 of 3 failed, and fewer than min_calls
    breaker.record_failure()
    assert breaker.state() == OPEN  # 2 of 4


def test_old_calls_leave_the_window(clock):
    breaker = make(clock, failure_threshold=100, failure_rate=0.5, window=4, min_calls=4)
    for ok in (False, False, True, True, True, True, False):
        (breaker.record_success if ok else breaker.record_failure)()
    assert breaker.state() == CLOSED  # the window holds T T T F: 25%
    assert breaker.snapshot()["window_failures"] == 1


def test_it_half_opens_after_reset_timeout_and_admits_only_the_trials_allowed(clock):
    breaker = make(clock, half_open_max_calls=2)
    fail(breaker, 3)
    clock.advance(9.9)
    with pytest.raises(BreakerOpen):
        breaker.allow()
    clock.advance(0.1)
    first, second = breaker.allow(), breaker.allow()
    assert breaker.state() == HALF_OPEN and first.trial and second.trial
    with pytest.raises(BreakerOpen) as refused:
        breaker.allow()
    assert refused.value.state == HALF_OPEN


def test_it_closes_after_success_threshold_trial_successes(clock):
    breaker = make(clock)
    fail(breaker, 3)
    clock.advance(10)
    breaker.record_success(breaker.allow())
    assert breaker.state() == HALF_OPEN
    breaker.record_success(breaker.allow())
    assert breaker.state() == CLOSED


def test_a_failed_trial_opens_it_again_for_another_reset_timeout(clock):
    breaker = make(clock)
    fail(breaker, 3)
    clock.advance(10)
    breaker.record_failure(breaker.allow())
    assert breaker.state() == OPEN
    assert breaker.snapshot()["next_probe_at"] == clock() + 10


def test_outcomes_of_calls_let_through_before_it_opened_do_not_count_as_trials(clock):
    breaker = make(clock)
    early = breaker.allow()
    fail(breaker, 3)
    clock.advance(10)
    breaker.record_success(early)
    breaker.record_failure(early)
    assert breaker.state() == HALF_OPEN
    assert breaker.snapshot()["trial_successes"] == 0


def test_a_trial_that_never_reports_frees_its_slot_after_reset_timeout(clock):
    breaker = make(clock)
    fail(breaker, 3)
    clock.advance(10)
    breaker.allow()  # its caller died
    clock.advance(10)
    assert breaker.allow().trial


def test_a_cancelled_call_gives_its_trial_back(clock):
    breaker = make(clock)
    fail(breaker, 3)
    clock.advance(10)
    breaker.release(breaker.allow())
    assert breaker.allow().trial


def test_two_instances_share_one_breaker_through_redis(clock):
    one = make(clock)
    other = CircuitBreaker(one.target, failure_threshold=3, reset_timeout=10, clock=clock)
    fail(one, 2)
    fail(other, 1)
    assert one.state() == other.state() == OPEN


def test_concurrent_failures_are_all_counted(clock):
    breaker = make(clock, failure_threshold=1000)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: fail(breaker, 25), range(8)))
    assert breaker.snapshot()["consecutive_failures"] == 200


def test_another_process_sees_the_breaker_this_one_opened():
    breaker = make(time.time, failure_threshold=2, reset_timeout=3600)
    code = (
        "import django; django.setup()\n"
        "from engines.serving.resilience.breaker import CircuitBreaker\n"
        f"breaker = CircuitBreaker({breaker.target!r}, reset_timeout=3600)\n"
        "print(breaker.state())\n"
    )
    fail(breaker, 2)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "blaze_site.settings", "BLAZE_REDIS_PREFIX": settings.REDIS_PREFIX,
           "REDIS_URL": settings.REDIS_URL}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == OPEN, out.stderr


def test_reset_closes_it_and_the_snapshot_shows_the_transitions(clock):
    breaker = make(clock)
    fail(breaker, 3)
    breaker.reset()
    snapshot = breaker.snapshot()
    assert snapshot["state"] == CLOSED and snapshot["consecutive_failures"] == 0
    assert [(t["from"], t["to"]) for t in snapshot["transitions"]] == [(OPEN, CLOSED), (CLOSED, OPEN)]
    assert snapshot["transitions"][1]["reason"] == "3 consecutive failures"
    assert breaker.target in [entry["target"] for entry in snapshots()]


def test_the_transitions_list_is_bounded(clock):
    breaker = make(clock, failure_threshold=1)
    for _ in range(40):
        fail(breaker)
        breaker.reset()
    assert len(breaker.snapshot()["transitions"]) == 50


def test_transitions_and_state_reach_the_metrics(clock):
    breaker = make(clock)
    opened = metrics.BREAKER_TRANSITIONS.labels(breaker.target, CLOSED, OPEN)
    fail(breaker, 3)
    assert opened._value.get() == 1
    assert metrics.BREAKER_STATE.labels(breaker.target)._value.get() == 2


def test_guard_records_failures_as_told_and_refuses_when_open(clock):
    breaker = make(clock, failure_threshold=1)
    with pytest.raises(ValueError), breaker.guard(is_failure=lambda exc: not isinstance(exc, ValueError)):
        raise ValueError("a 4xx: the caller's fault")
    assert breaker.state() == CLOSED
    with pytest.raises(KeyError), breaker.guard():
        raise KeyError("upstream down")
    with pytest.raises(BreakerOpen), breaker.guard():
        pass


def test_guard_works_in_async_code(clock):
    breaker = make(clock, failure_threshold=1)

    async def call():
        async with breaker.guard():
            raise ConnectionError

    with pytest.raises(ConnectionError):
        asyncio.run(call())
    assert asyncio.run(breaker.astate()) == OPEN


def test_without_redis_it_fails_open(clock, settings):
    breaker = make(clock, failure_threshold=1)
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    breaker.record_failure()
    assert breaker.allow() and breaker.state() == CLOSED


class Model:
    """The breaker's rules in plain Python, to check the Lua against."""

    def __init__(self, threshold, rate, window, min_calls, reset, successes, max_trials):
        self.threshold, self.rate, self.min_calls, self.reset = threshold, rate, min_calls, reset
        self.success_threshold, self.max_trials = successes, max_trials
        self.calls = deque(maxlen=window)
        self.state, self.opened_at = CLOSED, None
        self.move(CLOSED, 0)

    def move(self, state, now):
        self.state, self.failures, self.successes, self.trials = state, 0, 0, {}
        self.calls.clear()
        if state == OPEN:
            self.opened_at = now

    def tick(self, now):
        if self.state == OPEN and now >= self.opened_at + self.reset:
            self.move(HALF_OPEN, now)

    def allow(self, now, trial):
        """(granted, is_trial)"""
        self.tick(now)
        if self.state == CLOSED:
            return True, False
        live = [at for at in self.trials.values() if at > now - self.reset]
        if self.state == HALF_OPEN and len(live) < self.max_trials:
            self.trials[trial] = now
            return True, True
        return False, False

    def record(self, now, ok, trial):
        self.tick(now)
        if self.state == CLOSED:
            self.failures = 0 if ok else self.failures + 1
            self.calls.append(ok)
            failed = self.calls.count(False)
            if not ok and self.failures >= self.threshold:
                self.move(OPEN, now)
            elif not ok and len(self.calls) >= self.min_calls and failed / len(self.calls) >= self.rate:
                self.move(OPEN, now)
        elif self.state == HALF_OPEN and trial in self.trials:
            del self.trials[trial]
            if not ok:
                self.move(OPEN, now)
            else:
                self.successes += 1
                if self.successes >= self.success_threshold:
                    self.move(CLOSED, now)


class BreakerMachine(RuleBasedStateMachine):
    """Random sequences of calls, outcomes and time steps: the Redis breaker agrees with the model."""

    permits = Bundle("permits")

    def __init__(self):
        super().__init__()
        self.clock = Clock()
        self.breaker = CircuitBreaker(f"h-{uuid.uuid4().hex[:8]}", failure_threshold=3, failure_rate=0.5, window=6,
                                      min_calls=4, reset_timeout=5, success_threshold=2, half_open_max_calls=2,
                                      clock=self.clock)
        self.model = Model(threshold=3, rate=0.5, window=6, min_calls=4, reset=5, successes=2, max_trials=2)

    def _allow(self):
        try:
            permit = self.breaker.allow()
        except BreakerOpen:
            permit = None
        granted, is_trial = self.model.allow(self.clock(), permit.trial if permit else None)
        assert (permit is not None) == granted
        assert permit is None or bool(permit.trial) == is_trial
        return permit

    def _finish(self, permit, ok):
        (self.breaker.record_success if ok else self.breaker.record_failure)(permit)
        self.model.record(self.clock(), ok, permit.trial or None)

    @rule(target=permits)
    def allow(self):
        permit = self._allow()
        return multiple() if permit is None else permit

    @rule(permit=consumes(permits), ok=st.booleans())
    def finish(self, permit, ok):
        self._finish(permit, ok)

    @rule(ok=st.booleans())
    def call(self, ok):
        permit = self._allow()
        if permit is not None:
            self._finish(permit, ok)

    @rule(ok=st.booleans())
    def outcome_without_permit(self, ok):
        (self.breaker.record_success if ok else self.breaker.record_failure)()
        self.model.record(self.clock(), ok, None)

    @rule(seconds=st.sampled_from([0.5, 1, 2.5, 5, 7]))
    def wait(self, seconds):
        self.clock.advance(seconds)

    @invariant()
    def same_state(self):
        self.model.tick(self.clock())
        assert self.breaker.state() == self.model.state


BreakerMachine.TestCase.settings = hypothesis_settings(max_examples=40, stateful_step_count=30, deadline=None)
TestBreakerStateMachine = BreakerMachine.TestCase
