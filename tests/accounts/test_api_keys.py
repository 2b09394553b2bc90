"""API keys over /api/keys/: shown once, stored hashed, revocable, expiring, audited."""

import hashlib
import json
import logging
from datetime import timedelta

from django.db import OperationalError
from django.db.models import QuerySet
from django.utils import timezone

from accounts.models import ApiKey, AuditEvent


def create_key(client, **body):
    response = client.post("/api/keys/", {"name": "ci", "scopes": ["read"], **body}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def test_raw_key_is_returned_once_and_never_listed(operator_user, client_for):
    client = client_for(operator_user)
    raw = create_key(client)["key"]

    listing = client.get("/api/keys/")
    assert raw.startswith("blz_")
    assert raw not in listing.content.decode()
    assert "key" not in listing.json()["results"][0]


def test_database_holds_only_the_sha256_of_the_key(operator_user, client_for):
    raw = create_key(client_for(operator_user))["key"]

    stored = ApiKey.objects.get(user=operator_user)
    assert stored.key_hash == hashlib.sha256(raw.encode()).hexdigest()
    assert raw not in json.dumps(list(ApiKey.objects.values()), default=str)


def test_key_authenticates_as_its_owner(operator_user, client_for, bearer):
    raw = create_key(client_for(operator_user))["key"]

    response = bearer(raw).get("/api/me/")
    assert response.status_code == 200
    assert response.json()["username"] == operator_user.username


def test_using_a_key_sets_last_used_at(operator_user, key_for, bearer):
    key, raw = key_for(operator_user)
    assert key.last_used_at is None

    bearer(raw).get("/api/me/")
    key.refresh_from_db()
    assert key.last_used_at is not None


def test_expired_key_is_refused(operator_user, key_for, bearer):
    key, raw = key_for(operator_user, expires_at=timezone.now() + timedelta(days=1))
    ApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() - timedelta(minutes=1))

    response = bearer(raw).get("/api/me/")
    assert response.status_code == 401
    assert "expired" in response.json()["error"]


def test_delete_revokes_and_the_key_stays_listed(operator_user, key_for, client_for, bearer):
    key, raw = key_for(operator_user)
    client = client_for(operator_user)

    assert client.delete(f"/api/keys/{key.pk}/").status_code == 204
    response = bearer(raw).get("/api/me/")
    assert response.status_code == 401
    assert "revoked" in response.json()["error"]
    assert client.get(f"/api/keys/{key.pk}/").json()["state"] == "revoked"
    assert [row["id"] for row in client.get("/api/keys/").json()["results"]] == [key.pk]


def test_revoke_action_revokes(operator_user, key_for, client_for, bearer):
    key, raw = key_for(operator_user)

    response = client_for(operator_user).post(f"/api/keys/{key.pk}/revoke/")
    assert response.status_code == 200
    assert response.json()["state"] == "revoked"
    assert "revoked" in bearer(raw).get("/api/me/").json()["error"]


def test_user_cannot_see_or_revoke_anothers_key(operator_user, viewer_user, key_for, client_for, bearer):
    key, raw = key_for(viewer_user)
    client = client_for(operator_user)

    assert client.get("/api/keys/").json()["results"] == []
    assert client.get(f"/api/keys/{key.pk}/").status_code == 404
    assert client.delete(f"/api/keys/{key.pk}/").status_code == 404
    assert client.post(f"/api/keys/{key.pk}/revoke/").status_code == 404
    assert bearer(raw).get("/api/me/").status_code == 200


def test_admin_sees_and_revokes_anyones_key(admin_user, viewer_user, key_for, client_for, bearer):
    key, raw = key_for(viewer_user)
    client = client_for(admin_user)

    assert [row["owner"] for row in client.get("/api/keys/").json()["results"]] == [viewer_user.username]
    assert client.delete(f"/api/keys/{key.pk}/").status_code == 204
    assert bearer(raw).get("/api/me/").status_code == 401


def test_unknown_scope_is_400_naming_scopes(operator_user, client_for):
    response = client_for(operator_user).post("/api/keys/", {"name": "ci", "scopes": ["root"]}, format="json")

    assert response.status_code == 400
    assert [name.split(".")[0] for name in response.json()["fields"]] == ["scopes"]
    assert not ApiKey.objects.exists()


def test_expiry_in_the_past_is_400_naming_expires_at(operator_user, client_for):
    response = client_for(operator_user).post(
        "/api/keys/", {"name": "ci", "scopes": ["read"], "expires_at": "2000-01-01T00:00:00Z"}, format="json"
    )

    assert response.status_code == 400
    assert list(response.json()["fields"]) == ["expires_at"]
    assert not ApiKey.objects.exists()


def test_create_records_one_event_without_the_raw_key(operator_user, client_for):
    raw = create_key(client_for(operator_user), scopes=["read", "inference"])["key"]

    event = AuditEvent.objects.get(action="apikey.create")
    assert event.actor == operator_user.username
    assert event.changes["scopes"] == [None, ["inference", "read"]]
    assert raw not in json.dumps(list(AuditEvent.objects.values()), default=str)


def test_revoke_records_one_event_even_when_repeated(operator_user, key_for, client_for):
    key, raw = key_for(operator_user)
    client = client_for(operator_user)

    client.post(f"/api/keys/{key.pk}/revoke/")
    client.delete(f"/api/keys/{key.pk}/")
    assert AuditEvent.objects.filter(action="apikey.revoke", target_id=str(key.pk)).count() == 1
    assert raw not in json.dumps(list(AuditEvent.objects.values()), default=str)


def test_a_key_is_accepted_when_its_last_use_cannot_be_written(operator_user, key_for, bearer, monkeypatch, caplog):
    key, raw = key_for(operator_user)

    def database_away(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(QuerySet, "update", database_away)  # last_used_at is written with one update()
    with caplog.at_level(logging.WARNING, logger="accounts.authentication"):
        assert bearer(raw).get("/api/me/").status_code == 200
    assert "last use not recorded" in caplog.text
