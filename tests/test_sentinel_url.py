"""A REDIS_URL naming a Sentinel set (`redis+sentinel://`) reaches every use Blaze makes of Redis, each
library through its own Sentinel support: shared state (sync and asyncio clients), Django's cache, the
channel layer, Celery's broker and result backend. A plain redis:// URL gives what it always gave."""

import asyncio

import pytest
import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel
from django.core.exceptions import ImproperlyConfigured

from core import shared_state
from core.shared_state import SentinelUrl
from tests.test_settings import settings_in

URL = "redis+sentinel://:s%40cret@10.0.0.1:26380,10.0.0.2,[fd00::3]:26381/blaze-main/2"


def test_the_url_names_the_sentinels_the_master_and_its_database():
    target = SentinelUrl.parse(URL, "watch")
    assert target.sentinels == (("10.0.0.1", 26380), ("10.0.0.2", 26379), ("fd00::3", 26381))
    assert (target.master, target.db, target.username, target.password) == ("blaze-main", 2, None, "s@cret")
    assert target.sentinel_kwargs()["password"] == "watch"
    assert SentinelUrl.parse("redis+sentinel://u:p@s1/mymaster") == SentinelUrl(
        sentinels=(("s1", 26379),), master="mymaster", db=0, username="u", password="p")


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "rediss://h:6380/1", "unix:///tmp/redis.sock"])
def test_any_other_url_names_one_redis(url):
    assert SentinelUrl.parse(url) is None


@pytest.mark.parametrize("url", [
    "redis+sentinel://s1:26379", "redis+sentinel://s1:26379/", "redis+sentinel://s1/m/zero",
    "redis+sentinel://s1/m/0/extra", "redis+sentinel://s1:port/m", "redis+sentinel:///m", "redis+sentinel://s1/m?db=2",
])
def test_a_malformed_url_is_refused_saying_the_form_and_never_the_password(url):
    with pytest.raises(ImproperlyConfigured, match="redis\\+sentinel://") as refused:
        SentinelUrl.parse(url.replace("://", "://:hunter2@"))
    assert "hunter2" not in str(refused.value)


def test_every_consumer_is_configured_for_the_set(tmp_path):
    settings = settings_in(tmp_path, REDIS_URL=URL, BLAZE_REDIS_SENTINEL_PASSWORD="watch")
    sentinels = {"password": "watch", "socket_connect_timeout": 1, "socket_timeout": 1, "retry": None}
    kombu = ("sentinel://:s%40cret@10.0.0.1:26380/2;sentinel://:s%40cret@10.0.0.2:26379/2;"
             "sentinel://:s%40cret@[fd00::3]:26381/2")
    assert settings["CELERY_BROKER_URL"] == settings["CELERY_RESULT_BACKEND"] == kombu
    options = settings["CELERY_BROKER_TRANSPORT_OPTIONS"]
    assert options["master_name"] == "blaze-main" and options["sentinel_kwargs"] == sentinels
    assert (options["socket_connect_timeout"], options["socket_timeout"]) == (2, 5)
    assert options["global_keyprefix"] == f"{settings['REDIS_PREFIX']}:celery:"  # what a plain broker has stays
    assert settings["CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS"] == {"master_name": "blaze-main",
                                                                   "sentinel_kwargs": sentinels}
    assert (settings["CELERY_REDIS_SOCKET_CONNECT_TIMEOUT"], settings["CELERY_REDIS_SOCKET_TIMEOUT"]) == (2, 5)
    assert settings["CHANNEL_LAYERS"]["default"]["CONFIG"]["hosts"] == [{
        "master_name": "blaze-main", "sentinels": [["10.0.0.1", 26380], ["10.0.0.2", 26379], ["fd00::3", 26381]],
        "sentinel_kwargs": sentinels, "db": 2, "username": None, "password": "s@cret",
        "socket_connect_timeout": 2, "socket_timeout": 5}]
    cache = settings["CACHES"]["default"]
    assert cache["LOCATION"] == [URL]  # one server: Django would split the URL at its commas
    assert cache["OPTIONS"] == {"pool_class": "core.shared_state.CachePool", "socket_connect_timeout": 2,
                                "socket_timeout": 5}


def test_a_plain_url_configures_every_consumer_as_before(tmp_path):
    url = "redis://cache.example:6380/2"
    settings = settings_in(tmp_path, REDIS_URL=url)
    assert settings["CELERY_BROKER_URL"] == settings["CELERY_RESULT_BACKEND"] == url
    assert "master_name" not in settings["CELERY_BROKER_TRANSPORT_OPTIONS"]
    assert "CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS" not in settings
    assert settings["CHANNEL_LAYERS"]["default"]["CONFIG"]["hosts"] == [url]
    assert settings["CACHES"]["default"] == {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                             "LOCATION": url, "KEY_PREFIX": settings["REDIS_PREFIX"]}


async def loop_pool():
    """The pool of the asyncio client shared_state hands out (for REDIS_URL as the test set it)."""
    client = shared_state.loop_client()
    try:
        return client.connection_pool
    finally:
        await client.aclose()


def test_shared_state_pools_follow_the_sets_master(settings):
    settings.REDIS_URL, settings.REDIS_SENTINEL_PASSWORD = URL, "watch"
    pool = shared_state.connection_pool(URL, socket_timeout=5)
    assert isinstance(pool, redis.sentinel.SentinelConnectionPool) and pool.service_name == "blaze-main"
    assert [(s.get_connection_kwargs()["host"], s.get_connection_kwargs()["port"])
            for s in pool.sentinel_manager.sentinels] == list(SentinelUrl.parse(URL).sentinels)
    assert pool.sentinel_manager.sentinel_kwargs["password"] == "watch"
    assert {key: pool.connection_kwargs[key] for key in ("db", "password", "socket_timeout")} == {
        "db": 2, "password": "s@cret", "socket_timeout": 5}
    assert isinstance(shared_state.CachePool.from_url(URL), redis.sentinel.SentinelConnectionPool)
    assert isinstance(shared_state.new_client().connection_pool, redis.sentinel.SentinelConnectionPool)

    pool = asyncio.run(loop_pool())
    assert isinstance(pool, redis.asyncio.sentinel.SentinelConnectionPool)
    assert pool.connection_class is shared_state.HiredisPackedSentinelConnection  # packed as a plain one is
    assert (pool.connection_kwargs["socket_connect_timeout"], pool.connection_kwargs["socket_timeout"]) == (2, 5)


def test_shared_state_pools_for_a_plain_url_are_redis_pys_own(settings):
    url = "redis://127.0.0.1:1/3"
    settings.REDIS_URL = url
    pool = shared_state.connection_pool(url, socket_timeout=5)
    assert type(pool) is redis.ConnectionPool and pool.connection_kwargs["db"] == 3

    pool = asyncio.run(loop_pool())
    assert type(pool) is redis.asyncio.ConnectionPool
    assert pool.connection_class is shared_state.HiredisPackedConnection
    assert pool.connection_kwargs["socket_connect_timeout"] == 2 and "socket_timeout" not in pool.connection_kwargs
