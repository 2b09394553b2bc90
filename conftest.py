"""Test-wide set-up: each run gets its own Redis key prefix, cleaned after every test."""

import uuid

import pytest
import redis
from django.conf import settings


def pytest_configure(config):
    prefix = f"blaze-test-{uuid.uuid4().hex[:8]}"
    settings.REDIS_PREFIX = prefix
    settings.CACHES["default"]["KEY_PREFIX"] = prefix
    settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = f"{prefix}:asgi"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS["global_keyprefix"] = f"{prefix}:celery:"
    # Test workers beat fast so that a killed one is noticed in seconds.
    settings.BLAZE_HEARTBEAT_SECONDS, settings.BLAZE_WORKER_LOST_SECONDS = 0.5, 3


@pytest.fixture(scope="session")
def redis_client():
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.exit(f"Redis does not answer at {settings.REDIS_URL} ({exc}); `./blaze test` starts one.", returncode=3)
    return client


@pytest.fixture(autouse=True)
def _clean_redis(redis_client):
    """Each test starts without the last one's counters; the session's workers keep their queues and
    heartbeats."""
    yield
    prefix = settings.REDIS_PREFIX
    keep = (f"{prefix}:celery:", f"{prefix}:worker:", f"{prefix}:workers")
    keys = [key for key in redis_client.scan_iter(f"{prefix}:*", count=1000) if not key.decode().startswith(keep)]
    if keys:
        redis_client.delete(*keys)
