"""The one place that knows Redis key names and hands out Redis clients.

Every key starts with settings.REDIS_PREFIX, so several Blaze installations (or test runs) can share
one Redis.
"""

from functools import lru_cache

import redis
import redis.asyncio
from django.conf import settings


def key(*parts):
    return ":".join([settings.REDIS_PREFIX, *map(str, parts)])


def worker_key(hostname):
    return key("worker", hostname)


def workers_key():
    return key("workers")


def response_stream_key(request_id):
    return key("response", request_id)


def request_done_key(request_id):
    return key("response", request_id, "done")


def engine_stats_key(name):
    return key("engine", name, "stats")


@lru_cache(maxsize=None)
def _pool(url):
    return redis.ConnectionPool.from_url(url, decode_responses=True)


def client():
    """A synchronous client on a shared pool (thread-safe)."""
    return redis.Redis(connection_pool=_pool(settings.REDIS_URL))


def async_client():
    """An asyncio client; create one per event loop (asyncio pools are loop-bound)."""
    return redis.asyncio.Redis.from_url(settings.REDIS_URL, decode_responses=True)
