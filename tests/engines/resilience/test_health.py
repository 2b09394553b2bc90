"""Health from real traffic and active checks: UNKNOWN → HEALTHY → DEGRADED → UNHEALTHY and back, checks
against real loopback upstreams, bounded history, uptime and latency percentiles, shared through Redis."""

import asyncio
import uuid

import pytest
from django.core.management import call_command

from engines.models import Engine
from engines.serving.resilience import http
from engines.serving.resilience.health import (
    DEGRADED,
    HEALTHY,
    UNHEALTHY,
    UNKNOWN,
    HealthMonitor,
    check_once,
    down_by_check,
    http_probe,
    snapshots,
    states,
)
from tests.servers import free_port


def make(clock, **overrides):
    options = dict(unhealthy_after=3, degraded_error_rate=0.2, degraded_latency=2, window=5, clock=clock)
    return HealthMonitor(f"h-{uuid.uuid4().hex[:8]}", **{**options, **overrides})


def check(monitor, probe, timeout=2):
    async def once():
        try:
            return await check_once(monitor, probe, timeout=timeout)
        finally:
            await http.aclose_all()

    return asyncio.run(once())


def test_a_target_without_data_is_unknown(clock):
    monitor = make(clock)
    assert monitor.state() == UNKNOWN
    assert monitor.snapshot()["uptime_percent"] is None


def test_outcomes_move_it_healthy_degraded_unhealthy_and_back(clock):
    monitor = make(clock)
    seen = [monitor.record(ok, 0.1) for ok in (True,) * 5 + (False,) * 3 + (True,) * 5]
    # 1 of the last 5 failed (20%) is still healthy; 2 (40%) is degraded; 3 in a row, unhealthy.
    assert seen == [HEALTHY] * 5 + [HEALTHY, DEGRADED, UNHEALTHY] + [DEGRADED] * 3 + [HEALTHY] * 2


def test_a_slow_target_is_degraded_by_its_latency_ewma(clock):
    monitor = make(clock)
    monitor.record(True, 0.5)
    assert monitor.record(True, 10) == DEGRADED  # EWMA 0.3 × 10 + 0.7 × 0.5 = 3.35 > 2
    assert monitor.snapshot()["latency_ewma"] == pytest.approx(3.35)


def test_failures_do_not_pull_the_latency_down(clock):
    monitor = make(clock, unhealthy_after=100)
    monitor.record(True, 1.0)
    monitor.record(False, 0.001, detail="refused")
    snapshot = monitor.snapshot()
    assert snapshot["latency_ewma"] == 1.0
    assert snapshot["last_error"] == "refused" and snapshot["consecutive_failures"] == 1


def test_latency_percentiles_over_recent_successes(clock):
    monitor = make(clock)
    for ms in range(1, 101):
        monitor.record(True, ms / 1000)
    snapshot = monitor.snapshot()
    assert (snapshot["latency_p50"], snapshot["latency_p95"]) == (0.05, 0.095)


def test_an_active_check_of_a_healthy_host_passes(upstream):
    monitor = HealthMonitor("healthy-host")
    result = check(monitor, http_probe(upstream.url + upstream.path("ok") + "/v1"))
    assert result["ok"] and result["state"] == HEALTHY
    assert monitor.snapshot()["checks"][0]["ok"] is True


def test_the_check_asks_for_models_and_sends_the_api_key(upstream):
    base = upstream.url + upstream.path("ok") + "/v1"
    check(HealthMonitor("models"), http_probe(base, "sk-test"))
    assert upstream.hits[base[len(upstream.url):] + "/models"] == 1


def test_a_host_without_models_is_checked_at_health(upstream):
    result = check(HealthMonitor("health-only"), http_probe(upstream.url + upstream.path("nomodels") + "/v1"))
    assert result["ok"]


def test_an_active_check_of_a_failing_host_fails_with_the_reason(upstream):
    result = check(HealthMonitor("failing-host"), http_probe(upstream.url + upstream.path("fail")))
    assert not result["ok"] and "500" in result["detail"]


def test_an_active_check_of_a_refused_port_fails(refused_url):
    result = check(HealthMonitor("down-host"), http_probe(refused_url + "/v1"))
    assert not result["ok"] and result["detail"].startswith("UpstreamUnreachable: Cannot connect")


def test_an_active_check_that_outlasts_its_timeout_fails(upstream):
    result = check(HealthMonitor("slow-host"), http_probe(upstream.url + upstream.path("slow")), timeout=0.2)
    assert not result["ok"] and result["detail"] == "No answer within 0.2 s."
    assert result["latency"] < 0.5


def test_a_caller_supplied_probe_checks_a_local_engine(clock):
    async def out_of_memory():
        raise MemoryError("CUDA out of memory")

    monitor = make(clock)
    for _ in range(3):
        result = check(monitor, out_of_memory)
    assert result["state"] == UNHEALTHY and result["detail"] == "MemoryError: CUDA out of memory"


def test_only_the_last_100_checks_are_kept_newest_first(clock):
    monitor = make(clock)
    for n in range(105):
        clock.advance(1)
        monitor.record_check(True, 0.01, detail=str(n))
    checks = monitor.snapshot()["checks"]
    assert len(checks) == 100 and checks[0]["detail"] == "104"


def test_uptime_is_the_share_of_checks_that_passed(clock):
    monitor = make(clock, unhealthy_after=100)
    for ok in (True, True, True, False):
        monitor.record_check(ok, 0.01)
    monitor.record(False, 1.0)  # traffic does not count toward uptime
    assert monitor.snapshot()["uptime_percent"] == 75.0


def test_every_process_sees_the_same_state(clock):
    make(clock).record(True, 0.1)
    one = make(clock)
    for _ in range(3):
        HealthMonitor(one.target, clock=clock).record(False)
    assert states([one.target, "never-seen"]) == {one.target: UNHEALTHY, "never-seen": UNKNOWN}
    assert one.target in [entry["target"] for entry in snapshots()]


def test_without_redis_outcomes_are_dropped_and_states_unknown(clock, settings):
    monitor = make(clock)
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    assert monitor.record(False, detail="refused") == UNKNOWN
    assert monitor.state() == UNKNOWN


@pytest.mark.django_db(transaction=True)
def test_check_upstreams_checks_every_enabled_remote_engine(upstream, refused_url):
    Engine.objects.create(name="up", kind="llm", backend="remote", base_url=upstream.url + upstream.path("ok") + "/v1")
    Engine.objects.create(name="down", kind="llm", backend="remote", base_url=refused_url + "/v1")
    Engine.objects.create(name="off", kind="llm", backend="remote", base_url=refused_url, enabled=False)
    call_command("check_upstreams", "--once")
    assert states(["up", "down", "off"]) == {"up": HEALTHY, "down": DEGRADED, "off": UNKNOWN}


def test_only_fresh_failed_checks_take_a_target_out_of_routing(clock, settings):
    settings.BLAZE_HEALTH_CHECK_INTERVAL = 10
    by_traffic, by_checks = make(clock), make(clock)
    for _ in range(3):
        by_traffic.record(False)
        by_checks.record_check(False, 0.1, detail="503")
    assert by_traffic.state() == by_checks.state() == UNHEALTHY
    # Traffic failures are the breaker's to judge (it lets trials through); failed checks are the monitor's.
    assert down_by_check([by_traffic.target, by_checks.target], now=clock()) == {by_checks.target}
    assert down_by_check([by_checks.target], now=clock() + 31) == set()  # three intervals: the checker stopped
    clock.advance(1)
    by_checks.record_check(True, 0.1)
    assert down_by_check([by_checks.target], now=clock()) == set()
