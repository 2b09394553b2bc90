"""/api/ratelimits/: operators change policies, every change audited; viewers cannot; bad input is a
400 naming the field."""

import pytest

from accounts.models import AuditEvent

GOOD = {"name": "chat-per-key", "scope": "api_key", "endpoint": "/v1/", "algorithm": "token_bucket",
        "limit": 60, "period_seconds": 60, "burst": 10}


def test_operator_creates_a_policy_and_the_audit_log_says_so(client_for, operator_user):
    response = client_for(operator_user).post("/api/ratelimits/", GOOD, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["action"] == "reject" and response.json()["enabled"] is True
    event = AuditEvent.objects.get(action="ratelimit.create")
    assert (event.actor, event.target) == ("otto", "chat-per-key")
    assert event.changes["limit"] == [None, 60] and event.changes["burst"] == [None, 10]


def test_operator_changes_a_policy_and_the_diff_is_audited(client_for, operator_user, make_policy):
    policy = make_policy(endpoint="/v1/", limit=5)
    response = client_for(operator_user).patch(f"/api/ratelimits/{policy.pk}/", {"limit": 10}, format="json")
    assert response.status_code == 200 and response.json()["limit"] == 10
    assert AuditEvent.objects.get(action="ratelimit.update").changes == {"limit": [5, 10]}


def test_disabling_is_audited_as_such(client_for, operator_user, make_policy):
    policy = make_policy(endpoint="/v1/")
    client_for(operator_user).patch(f"/api/ratelimits/{policy.pk}/", {"enabled": False}, format="json")
    assert AuditEvent.objects.get(action="ratelimit.disable").changes == {"enabled": [True, False]}


def test_operator_deletes_a_policy_and_the_audit_log_keeps_what_it_was(client_for, operator_user, make_policy):
    policy = make_policy(name="doomed", endpoint="/v1/", limit=7)
    assert client_for(operator_user).delete(f"/api/ratelimits/{policy.pk}/").status_code == 204
    event = AuditEvent.objects.get(action="ratelimit.delete")
    assert event.target == "doomed" and event.changes["limit"] == [7, None]


def test_viewers_can_neither_see_nor_change_policies(client_for, viewer_user, make_policy):
    policy = make_policy(endpoint="/v1/")
    client = client_for(viewer_user)
    assert client.get("/api/ratelimits/").status_code == 403
    assert client.post("/api/ratelimits/", GOOD, format="json").status_code == 403
    assert client.patch(f"/api/ratelimits/{policy.pk}/", {"limit": 1}, format="json").status_code == 403
    assert client.delete(f"/api/ratelimits/{policy.pk}/").status_code == 403
    assert not AuditEvent.objects.filter(action__startswith="ratelimit.").exclude(actor="test").exists()


@pytest.mark.parametrize("change, field", [
    ({"algorithm": "fixed_window"}, "burst"),
    ({"action": "delay"}, "max_delay"),
    ({"max_delay": 2}, "max_delay"),
    ({"action": "delay", "max_delay": 600}, "max_delay"),
    ({"endpoint": "v1/"}, "endpoint"),
    ({"limit": 0}, "limit"),
    ({"period_seconds": "soon"}, "period_seconds"),
    ({"algorithm": "magic"}, "algorithm"),
    ({"scope": "planet"}, "scope"),
    ({"burst": 0}, "burst"),
    ({"colour": "red"}, "colour"),
])
def test_bad_input_is_a_400_naming_the_field(client_for, operator_user, change, field):
    response = client_for(operator_user).post("/api/ratelimits/", {**GOOD, **change}, format="json")
    assert response.status_code == 400
    assert field in response.json()["fields"], response.json()


def test_a_partial_change_is_checked_against_the_stored_policy(client_for, operator_user, make_policy):
    policy = make_policy(algorithm="token_bucket", burst=5)
    response = client_for(operator_user).patch(f"/api/ratelimits/{policy.pk}/", {"algorithm": "sliding_window"},
                                               format="json")
    assert response.status_code == 400 and "burst" in response.json()["fields"]


def test_a_taken_name_is_a_409_naming_name(client_for, operator_user, make_policy):
    make_policy(name="chat-per-key")
    response = client_for(operator_user).post("/api/ratelimits/", GOOD, format="json")
    assert response.status_code == 409 and list(response.json()["fields"]) == ["name"]


def test_usage_shows_each_counted_identity(client_for, operator_user, make_policy, api):
    policy = make_policy(scope="ip", endpoint="/api/me", limit=5)
    api.get("/api/me/", REMOTE_ADDR="10.0.0.9")
    api.get("/api/me/", REMOTE_ADDR="10.0.0.9")
    usage = client_for(operator_user).get(f"/api/ratelimits/{policy.pk}/usage/").json()
    assert [(counter["identity"], counter["used"], counter["limit"]) for counter in usage] == [("ip:10.0.0.9", 2, 5)]
