"""core.lookups: /v1's keys and plans come from this process's copy while nothing changed, and from
the database the moment something did (the cross-process case: tests/engines/test_routing.py)."""

import asyncio
import logging
import time
import uuid

from rest_framework.test import APIClient

from accounts.audit import Actor
from accounts.models import ApiKey
from accounts.services import api_key_revoke, user_update


def test_a_revoked_key_is_refused_on_its_next_request(key_for, viewer_user):
    key, raw = key_for(viewer_user, ["inference"])
    client = APIClient(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert client.get("/v1/models").status_code == 200
    api_key_revoke(actor=Actor.system("test"), key=key)
    refused = client.get("/v1/models")
    assert refused.status_code == 401 and "revoked" in refused.json()["error"]["message"]


def test_a_deactivated_owner_is_refused_on_the_next_request(key_for, viewer_user):
    _, raw = key_for(viewer_user, ["inference"])
    client = APIClient(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert client.get("/v1/models").status_code == 200
    user_update(actor=Actor.system("test"), user=viewer_user, is_active=False)
    assert client.get("/v1/models").status_code == 401


def test_with_redis_down_keys_are_read_from_the_database_each_time(key_for, viewer_user, settings, caplog):
    key, raw = key_for(viewer_user, ["inference"])
    client = APIClient(HTTP_AUTHORIZATION=f"Bearer {raw}")
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    with caplog.at_level(logging.WARNING, logger="core.lookups"):
        assert client.get("/v1/models").status_code == 200
    assert "Lookups not cached" in caplog.text
    # Written past the signals that would end a cached copy: only a fresh read sees it.
    ApiKey.objects.filter(pk=key.pk).update(revoked_at=key.created_at)
    assert client.get("/v1/models").status_code == 401


def test_requests_that_miss_an_entry_at_once_share_one_load():
    """An entry that lapses under load: the requests in flight wait for one load of it, instead of
    each queueing its own in the one sync thread."""
    from core import lookups

    loads = []

    def load():
        loads.append(1)
        time.sleep(0.2)
        return "the plan"

    async def thirty_two_at_once():
        lookups.forget()
        generation = uuid.uuid4().hex
        return await asyncio.gather(*(lookups.cached("plan", "chat", generation, load) for _ in range(32)))

    started = time.monotonic()
    assert asyncio.run(thirty_two_at_once()) == ["the plan"] * 32
    assert len(loads) == 1 and time.monotonic() - started < 2  # one at a time would be 6.4 s


def test_a_request_that_goes_away_does_not_cancel_the_load_the_others_wait_for():
    from core import lookups

    def load():
        time.sleep(0.2)
        return "the key"

    async def one_leaves():
        lookups.forget()
        generation = uuid.uuid4().hex
        leaving = asyncio.ensure_future(lookups.cached("api_key", "k", generation, load))
        staying = asyncio.ensure_future(lookups.cached("api_key", "k", generation, load))
        await asyncio.sleep(0.05)
        leaving.cancel()
        return await staying

    assert asyncio.run(one_leaves()) == "the key"


def test_an_entry_past_its_age_is_served_once_more_while_it_is_read_again(settings):
    from core import lookups

    settings.BLAZE_LOOKUP_CACHE_SECONDS = 0.1
    values = iter(["old", "new"])

    async def lapse():
        lookups.forget()
        generation = uuid.uuid4().hex
        first = await lookups.cached("plan", "chat", generation, lambda: next(values))
        await asyncio.sleep(0.15)
        stale = await lookups.cached("plan", "chat", generation, lambda: next(values))
        await asyncio.sleep(0.1)  # the background load
        return first, stale, await lookups.cached("plan", "chat", generation, lambda: next(values))

    assert asyncio.run(lapse()) == ("old", "old", "new")
