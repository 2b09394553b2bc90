"""Every change to an engine leaves exactly one audit event saying who changed what."""

import json

import pytest

from accounts.models import AuditEvent

SECRET = "sk-first-secret-123"
NEW_SECRET = "sk-second-secret-456"


@pytest.fixture
def operator(operator_user, client_for):
    return client_for(operator_user)


@pytest.fixture
def engine(operator):
    response = operator.post("/api/engines/", {"name": "tiny", "kind": "llm", "model": "tiny-llm"}, format="json")
    assert response.status_code == 201
    return response.json()


def engine_events():
    return list(AuditEvent.objects.filter(action__startswith="engine.").order_by("id"))


def last_event():
    return engine_events()[-1]


def test_create_records_one_event(engine):
    [event] = engine_events()
    assert (event.action, event.target, event.target_type) == ("engine.create", "tiny", "engines.engine")
    assert event.changes["name"] == [None, "tiny"]
    assert event.changes["config.max_batch_size"] == [None, 8]


def test_update_records_only_what_changed(operator, engine):
    operator.patch("/api/engines/tiny/", {"weight": 3}, format="json")
    assert len(engine_events()) == 2
    event = last_event()
    assert event.action == "engine.update"
    assert event.changes == {"weight": [1, 3]}


def test_config_change_is_a_dotted_key(operator, engine):
    operator.patch("/api/engines/tiny/", {"config": {**engine["config"], "max_batch_size": 16}}, format="json")
    assert last_event().changes == {"config.max_batch_size": [8, 16]}


def test_update_that_changes_nothing_records_nothing(operator, engine):
    assert operator.patch("/api/engines/tiny/", {"weight": 1}, format="json").status_code == 200
    assert operator.put("/api/engines/tiny/", {"name": "tiny", "kind": "llm", "model": "tiny-llm"},
                        format="json").status_code == 200
    assert [event.action for event in engine_events()] == ["engine.create"]


def test_refused_update_records_nothing(operator, engine):
    assert operator.patch("/api/engines/tiny/", {"weight": -1}, format="json").status_code == 400
    assert [event.action for event in engine_events()] == ["engine.create"]


def test_disable_and_enable_record_one_event_each(operator, engine):
    operator.post("/api/engines/tiny/disable/")
    operator.post("/api/engines/tiny/disable/")
    operator.post("/api/engines/tiny/enable/")
    actions = [event.action for event in engine_events()]
    assert actions == ["engine.create", "engine.disable", "engine.enable"]
    assert engine_events()[1].changes == {"enabled": [True, False]}


def test_delete_records_what_was_there(operator, engine):
    operator.delete("/api/engines/tiny/")
    event = last_event()
    assert (event.action, event.target) == ("engine.delete", "tiny")
    assert event.changes["model"] == ["tiny-llm", None]


def test_remote_api_key_never_reaches_the_log(operator):
    operator.post("/api/engines/", {"name": "far", "kind": "llm", "backend": "remote",
                                    "base_url": "https://llm.example.com/v1", "api_key": SECRET}, format="json")
    operator.patch("/api/engines/far/", {"api_key": NEW_SECRET}, format="json")
    operator.delete("/api/engines/far/")
    created, updated, deleted = engine_events()
    assert updated.changes == {"api_key": ["••••••", "••••••(changed)"]}
    for event in (created, updated, deleted):
        logged = json.dumps([event.changes, event.data])
        assert SECRET not in logged and NEW_SECRET not in logged


def test_actor_is_the_operator(operator, engine, operator_user):
    event = last_event()
    assert (event.actor, event.actor_user) == ("otto", operator_user)
    assert event.actor_key is None


def test_actor_names_the_api_key_used(operator_user, key_for, api):
    key, raw = key_for(operator_user, scopes=("manage",))
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert api.post("/api/engines/", {"name": "tiny", "kind": "llm", "model": "tiny-llm"},
                    format="json").status_code == 201
    event = last_event()
    assert event.actor == f"otto (key {key.prefix}…)"
    assert event.actor_key == key


def test_request_id_and_ip_are_stored(operator):
    response = operator.post("/api/engines/", {"name": "tiny", "kind": "llm", "model": "tiny-llm"}, format="json",
                             HTTP_X_REQUEST_ID="req-42.a", REMOTE_ADDR="203.0.113.7")
    assert response["X-Request-ID"] == "req-42.a"
    event = last_event()
    assert (event.request_id, event.ip) == ("req-42.a", "203.0.113.7")


def test_request_id_is_made_when_none_is_sent(operator):
    response = operator.post("/api/engines/", {"name": "tiny", "kind": "llm", "model": "tiny-llm"}, format="json")
    assert response["X-Request-ID"]
    assert last_event().request_id == response["X-Request-ID"]
