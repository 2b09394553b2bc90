"""/health (liveness) and /health/detailed (dependencies, workers, engines)."""

import httpx
import pytest

from tests.servers import start_daphne, start_redis, wait_for


def test_liveness_needs_no_credentials(api, settings):
    settings.BLAZE_METRICS_ALLOW_IPS = []
    assert api.get("/health").json() == {"status": "ok"}


def test_detailed_health_needs_credentials(api, settings, client_for, viewer_user):
    settings.BLAZE_METRICS_ALLOW_IPS = []
    assert api.get("/health/detailed").status_code in (401, 403)
    report = client_for(viewer_user).get("/health/detailed").json()
    assert report["checks"]["database"]["status"] == "up" and report["checks"]["redis"]["status"] == "up"


def test_detailed_health_lists_workers_and_engines(api, engine_worker, db):
    from engines.models import Engine

    Engine.objects.create(name="listed", kind="embedding", model="/nowhere")
    report = api.get("/health/detailed").json()
    assert report["status"] in ("ok", "degraded")
    worker = next(w for w in report["workers"] if w["id"] == engine_worker.hostname)
    assert not worker["lost"] and worker["heartbeat_age_seconds"] < 5
    assert {"name": "listed", "kind": "embedding", "enabled": True} .items() <= next(
        e for e in report["engines"] if e["name"] == "listed").items()


def test_no_live_worker_degrades_but_does_not_fail(api, settings, db):
    settings.REDIS_PREFIX = "blaze-test-no-workers"
    report = api.get("/health/detailed")
    assert report.status_code == 200 and report.json()["status"] == "degraded"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_detailed_health_is_503_while_redis_is_down_and_recovers(tmp_path):
    redis = start_redis(tmp_path)
    web = start_daphne(tmp_path, REDIS_URL=redis.url, BLAZE_METRICS_TOKEN="t")
    check = lambda: httpx.get(f"{web.url}/health/detailed", headers={"Authorization": "Bearer t"}, timeout=10)  # noqa: E731
    try:
        assert check().status_code == 200
        redis.stop()
        down = check()
        assert down.status_code == 503
        assert down.json()["checks"]["redis"]["status"] == "down"
        assert down.json()["checks"]["database"]["status"] == "up"
        assert httpx.get(f"{web.url}/health", timeout=10).status_code == 200  # liveness does not care
        redis = start_redis(tmp_path, port=redis.port)
        wait_for(lambda: check().status_code == 200, 20, "health back after Redis returns")
    finally:
        web.stop()
        redis.stop()
