"""blaze_site.lookups: /v1's keys and plans come from this process's copy while nothing changed, and from
the database the moment something did (the cross-process case: tests/engines/test_routing.py)."""

import logging

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
    with caplog.at_level(logging.WARNING, logger="blaze_site.lookups"):
        assert client.get("/v1/models").status_code == 200
    assert "Lookups not cached" in caplog.text
    # Written past the signals that would end a cached copy: only a fresh read sees it.
    ApiKey.objects.filter(pk=key.pk).update(revoked_at=key.created_at)
    assert client.get("/v1/models").status_code == 401
