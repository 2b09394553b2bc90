"""The live feed (dashboard/feed.py, live.py, consumers.py): rates and percentiles over the window,
the snapshot's rows, one producer at a time, and the WebSocket that only signed-in users may open."""

import asyncio
import json
import uuid

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.test import Client

from accounts.audit import Actor
from blaze_site.asgi import application
from core import shared_state
from dashboard import live
from dashboard.feed import Feed, quantile
from dashboard.history import History
from engines import services
from engines.serving.resilience.breaker import CircuitBreaker
from telemetry import metrics
from tests.conftest import make_user


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self):
        return self.now


def test_quantiles_interpolate_inside_a_bucket_as_prometheus_does():
    buckets = {0.1: 5, 0.5: 10, float("inf"): 10}
    assert quantile(buckets, 0.5) == 0.1
    assert quantile(buckets, 0.75) == pytest.approx(0.3)
    assert quantile({0.1: 0, float("inf"): 0}, 0.5) is None


def test_requests_become_rates_error_ratios_and_percentiles_over_the_window(db):
    model, clock = f"m-{uuid.uuid4().hex[:6]}", Clock()
    feed = Feed(window=10, clock=clock)
    feed.step()  # the first reading: the baseline
    for latency in (0.02, 0.02, 0.02, 0.02, 0.02, 0.02, 0.02, 0.02):
        metrics.MODEL_REQUESTS.labels(model, "ok").observe(latency)
    for _ in range(2):
        metrics.MODEL_REQUESTS.labels(model, "server_error").observe(0.2)
    clock.now += 10
    snapshot, samples = feed.step()
    [row] = [row for row in snapshot["routes"] if row["name"] == model]
    assert (row["requests_per_second"], row["errors_per_second"], row["error_ratio"]) == (1.0, 0.2, 0.2)
    assert 0.01 < row["latency_p50_seconds"] <= 0.025 and 0.1 < row["latency_p99_seconds"] <= 0.25
    assert {(s.name, s.value) for s in samples if s.labels == {"route": model}} >= {
        ("route_requests_per_second", 1.0), ("route_error_ratio", 0.2)}


def test_old_readings_leave_the_window(db):
    model, clock = f"m-{uuid.uuid4().hex[:6]}", Clock()
    feed = Feed(window=10, clock=clock)
    feed.step()
    metrics.MODEL_REQUESTS.labels(model, "ok").observe(0.01)
    for _ in range(12):  # a quiet twelve seconds after the one request
        clock.now += 1
        snapshot, _ = feed.step()
    assert all(row["name"] != model or row["requests_per_second"] == 0 for row in snapshot["routes"])


def test_the_snapshot_shows_routes_engines_and_open_breakers(db):
    actor = Actor.system("test")
    engine = services.engine_create(actor=actor, name="far", kind="llm", backend="remote",
                                    base_url="http://127.0.0.1:9/v1")
    route = services.route_create(actor=actor, name="chat")
    services.route_target_add(actor=actor, route=route, engine=engine)
    broken = CircuitBreaker("far", failure_threshold=1)
    broken.record_failure(broken.allow())
    snapshot, samples = Feed().step()
    [chat] = [row for row in snapshot["routes"] if row["name"] == "chat"]
    assert (chat["targets_total"], chat["targets_available"], chat["open_breakers"]) == (1, 0, 1)
    assert [row["name"] for row in snapshot["engines"]] == ["far"]
    assert {"target": "far", "state": "open"} in snapshot["breakers"]
    assert any(s.name == "breaker_open" and s.value == 1 and s.labels == {"target": "far"} for s in samples)


def test_the_engine_rows_count_cold_starts_and_their_mean_wait(db):
    name = f"cold-{uuid.uuid4().hex[:6]}"
    services.engine_create(actor=Actor.system("test"), name=name, kind="llm", backend="remote",
                           base_url="http://127.0.0.1:9/v1")
    for waited in (1.0, 3.0):  # what a worker counts as each request waits for the model's load
        metrics.COLD_STARTS.labels(name).inc()
        metrics.COLD_START_SECONDS.labels(name).inc(waited)
    snapshot, _ = Feed().step()
    [row] = [row for row in snapshot["engines"] if row["name"] == name]
    assert (row["cold_starts"], row["cold_start_mean_seconds"]) == (2, 2.0)


def test_only_one_producer_holds_the_lease(monkeypatch):
    # A lease of its own: the session's live-feed producer (tests/conftest.py) may hold the real one.
    lease_key = shared_state.key("feed", "producer", uuid.uuid4().hex)
    monkeypatch.setattr(shared_state, "feed_producer_key", lambda: lease_key)

    async def race():
        return [await live._elected("a", 5), await live._elected("b", 5), await live._elected("a", 5)]

    assert asyncio.run(race()) == [True, False, True]


def signed_in_cookie(user):
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


def dashboard(cookie=None, origin="http://localhost"):
    headers = [(b"origin", origin.encode()), (b"host", b"localhost")]
    if cookie:
        headers.append((b"cookie", cookie.encode()))
    return WebsocketCommunicator(application, "/ws/dashboard/", headers=headers)


def test_a_signed_in_viewer_receives_each_published_snapshot(transactional_db):
    cookie = signed_in_cookie(make_user("vera", "viewer"))

    async def watch():
        socket = dashboard(cookie)
        connected, _ = await socket.connect()
        assert connected
        await asyncio.sleep(0.2)  # the group subscription reaches Redis
        await live.publish_once(Feed(), History(), get_channel_layer())
        message = json.loads(await socket.receive_from(timeout=5))
        await socket.disconnect()
        return message

    message = asyncio.run(watch())
    assert {"t", "routes", "engines", "workers", "breakers", "alerts"} <= set(message)
    assert shared_state.client().get(shared_state.feed_latest_key()) is not None  # a new page starts from it


def test_the_dashboard_socket_refuses_visitors_users_without_a_role_and_other_origins(transactional_db):
    no_role = make_user("nobody", "viewer")
    no_role.groups.clear()

    async def attempt(cookie, origin="http://localhost"):
        socket = dashboard(cookie, origin)
        connected, _ = await socket.connect()
        await socket.disconnect()
        return connected

    viewer = signed_in_cookie(make_user("vera", "viewer"))
    assert asyncio.run(attempt(None)) is False
    assert asyncio.run(attempt(signed_in_cookie(no_role))) is False
    assert asyncio.run(attempt(viewer, origin="http://evil.example.com")) is False
    assert asyncio.run(attempt(viewer)) is True


def test_a_feed_that_made_no_reading_for_a_while_starts_afresh(db):
    """A producer that lost the lease (another published meanwhile) or stalled must not count the
    requests of all that time into its next window: they would show as the latest window's traffic."""
    model, clock = f"m-{uuid.uuid4().hex[:6]}", Clock()
    feed = Feed(window=10, clock=clock)
    feed.step()
    metrics.MODEL_REQUESTS.labels(model, "ok").observe(0.01)  # while another producer held the lease
    clock.now += 300
    snapshot, samples = feed.step()
    assert snapshot["window_seconds"] == 0  # nothing to difference yet
    assert not [sample for sample in samples if sample.labels.get("route") == model]
    metrics.MODEL_REQUESTS.labels(model, "ok").observe(0.01)
    clock.now += 1
    snapshot, _ = feed.step()
    [row] = [row for row in snapshot["routes"] if row["name"] == model]
    assert row["requests_per_second"] == pytest.approx(1.0)  # the one request of this second, not two
