"""Metric history (dashboard/history.py) and its API, /api/metrics/history/."""

from accounts.audit import Actor
from dashboard import history
from dashboard.history import History
from engines import services
from telemetry.series import Sample

T0 = 1_800_000_000.0  # a minute boundary: 30_000_000 × 60


def test_points_come_back_per_series_and_label_set(db):
    writer = History()
    for second in range(3):
        writer.record([Sample("route_requests_per_second", second, {"route": "chat"}),
                       Sample("route_requests_per_second", 10 + second, {"route": "embed"})], now=T0 + second)
    [chat] = history.read("route_requests_per_second", {"route": "chat"}, seconds=60, now=T0 + 3)
    assert chat["labels"] == {"route": "chat"} and chat["points"] == [[T0, 0.0], [T0 + 1, 1.0], [T0 + 2, 2.0]]
    both = history.read("route_requests_per_second", seconds=60, now=T0 + 3)
    assert [entry["labels"]["route"] for entry in both] == ["chat", "embed"]


def test_points_older_than_the_window_asked_for_are_left_out(db):
    writer = History()
    writer.record([Sample("worker_up", 1, {"worker": "w1"})], now=T0)
    writer.record([Sample("worker_up", 0, {"worker": "w1"})], now=T0 + 30)
    [entry] = history.read("worker_up", seconds=10, now=T0 + 35)
    assert entry["points"] == [[T0 + 30, 0.0]]


def test_a_day_is_answered_with_per_minute_means(db, settings):
    settings.BLAZE_HISTORY_POINTS = 5  # per-interval points reach 5 s back: a longer window uses minutes
    writer = History()
    for second in (0, 20, 40):
        writer.record([Sample("engine_queue_depth", second / 10, {"engine": "smol"})], now=T0 + second)
    writer.record([Sample("engine_queue_depth", 9, {"engine": "smol"})], now=T0 + 60)  # the minute turns
    [entry] = history.read("engine_queue_depth", seconds=86400, now=T0 + 61)
    assert entry["step"] == "minute" and entry["points"] == [[T0, 2.0]]


def test_the_points_kept_are_bounded(db, settings):
    settings.BLAZE_HISTORY_POINTS = 3
    writer = History()
    for second in range(10):
        writer.record([Sample("worker_cpu_percent", second, {"worker": "w1"})], now=T0 + second)
    [entry] = history.read("worker_cpu_percent", seconds=3, now=T0 + 10)
    assert [value for _, value in entry["points"]] == [7.0, 8.0, 9.0]


def test_the_api_returns_series_and_the_configuration_changes_to_mark(client_for, viewer_user, operator_user):
    History().record([Sample("route_requests_per_second", 4, {"route": "chat"})])
    services.engine_create(actor=Actor(user=operator_user), name="far", kind="llm", backend="remote",
                           base_url="http://127.0.0.1:9/v1")
    body = client_for(viewer_user).get("/api/metrics/history/?series=route_requests_per_second&route=chat").json()
    assert [entry["labels"] for entry in body["series"]] == [{"route": "chat"}]
    assert body["series"][0]["points"][-1][1] == 4.0
    [event] = body["events"]
    assert event["action"] == "engine.create" and event["target"] == "far" and event["url"].startswith("/audit/?")


def test_the_api_names_the_field_it_cannot_take(client_for, viewer_user):
    api = client_for(viewer_user)
    for query, field in [("", "series"), ("?series=bogus", "series"),
                         ("?series=worker_up&seconds=0", "seconds"), ("?series=worker_up&route=chat", "route")]:
        response = api.get(f"/api/metrics/history/{query}")
        assert response.status_code == 400 and list(response.json()["fields"]) == [field], query


def test_the_api_needs_credentials(db, api, settings):
    settings.BLAZE_METRICS_ALLOW_IPS = []
    response = api.get("/api/metrics/history/?series=worker_up")
    assert response.status_code == 401 and response.json()["error"] == "Authentication credentials were not provided."
