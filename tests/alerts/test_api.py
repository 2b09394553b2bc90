"""/api/alerts/: viewers read, operators change (every change audited), bad input is a 400 naming
the field and a taken name a 409; the active alerts and the built-in pack."""

import datetime
import re

import pytest
from django.utils import timezone

from accounts.models import AuditEvent
from alerts import evaluate as alerting
from alerts import notify
from alerts import services as alert_services
from alerts.models import AlertRule
from core.errors import InvalidInput
from tests.alerts.test_setup import ACTOR, latency, make_receiver, make_rule

pytestmark = pytest.mark.django_db

RULE = {"name": "chat-errors", "series": "route_error_ratio", "matchers": {"route": "chat"}, "comparator": ">",
        "threshold": 0.05, "for_seconds": 300, "severity": "critical",
        "annotations": {"summary": "Route {{ $labels.route }} fails {{ $value }} of its requests"}}
RECEIVER = {"name": "on-call", "url": "https://hooks.example.com/alerts?token=s3cret"}


def soon(hours=1):
    return (timezone.now() + datetime.timedelta(hours=hours)).isoformat()


def test_operator_creates_a_rule_and_the_audit_log_says_so(client_for, operator_user):
    response = client_for(operator_user).post("/api/alerts/rules/", RULE, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["keep_firing_for_seconds"] == 0 and response.json()["builtin"] is False
    event = AuditEvent.objects.get(action="alert_rule.create")
    assert (event.actor, event.target) == ("otto", "chat-errors")
    assert event.changes["threshold"] == [None, 0.05] and event.changes["matchers.route"] == [None, "chat"]


def test_a_change_to_a_rule_is_audited_as_its_diff(client_for, operator_user):
    make_rule(name="chat-slow", threshold=5)
    response = client_for(operator_user).patch("/api/alerts/rules/chat-slow/", {"threshold": 8}, format="json")
    assert response.status_code == 200 and response.json()["threshold"] == 8
    assert AuditEvent.objects.get(action="alert_rule.update").changes == {"threshold": [5, 8]}


def test_disabling_a_rule_is_audited_as_such(client_for, operator_user):
    make_rule(name="chat-slow")
    client_for(operator_user).patch("/api/alerts/rules/chat-slow/", {"enabled": False}, format="json")
    assert AuditEvent.objects.get(action="alert_rule.disable").changes == {"enabled": [True, False]}


def test_deleting_a_rule_is_audited_with_what_it_was(client_for, operator_user):
    make_rule(name="chat-slow", threshold=5)
    assert client_for(operator_user).delete("/api/alerts/rules/chat-slow/").status_code == 204
    event = AuditEvent.objects.get(action="alert_rule.delete")
    assert event.target == "chat-slow" and event.changes["threshold"] == [5, None]


@pytest.mark.parametrize("change, field", [
    ({"series": "route_happiness"}, "series"),
    ({"for_seconds": -1}, "for_seconds"),
    ({"keep_firing_for_seconds": -5}, "keep_firing_for_seconds"),
    ({"comparator": "~"}, "comparator"),
    ({"severity": "page-me"}, "severity"),
    ({"threshold": "high"}, "threshold"),
    ({"name": "not a slug"}, "name"),
    ({"matchers": {"engine": "x"}}, "matchers"),
    ({"matchers": ["route"]}, "matchers"),
    ({"labels": {"severity": "low"}}, "labels"),
    ({"labels": {"team": 7}}, "labels"),
    ({"annotations": {"description": "no summary"}}, "annotations"),
    ({"annotations": {"summary": "{{ $labels.route | toUpper }}"}}, "annotations"),
    ({"colour": "red"}, "colour"),
])
def test_bad_rules_are_a_400_naming_the_field(client_for, operator_user, change, field):
    response = client_for(operator_user).post("/api/alerts/rules/", {**RULE, **change}, format="json")
    assert response.status_code == 400
    assert field in response.json()["fields"], response.json()
    assert not AlertRule.objects.exists()


def test_the_services_refuse_bad_input_naming_the_field():
    with pytest.raises(InvalidInput) as refused:
        alert_services.alert_rule_create(actor=ACTOR, **{**RULE, "for_seconds": -1})
    assert refused.value.field == "for_seconds"
    with pytest.raises(InvalidInput) as refused:
        alert_services.alert_receiver_create(actor=ACTOR, name="x", url="ftp://files.example.com/")
    assert refused.value.field == "url"


def test_a_partial_change_is_checked_against_the_stored_rule(client_for, operator_user):
    make_rule(name="chat-slow", matchers={"route": "chat"})
    response = client_for(operator_user).patch("/api/alerts/rules/chat-slow/", {"series": "engine_queue_depth"},
                                               format="json")
    assert response.status_code == 400 and "matchers" in response.json()["fields"]


def test_a_taken_rule_name_is_a_409_naming_name(client_for, operator_user):
    make_rule(name="chat-errors")
    response = client_for(operator_user).post("/api/alerts/rules/", RULE, format="json")
    assert response.status_code == 409 and list(response.json()["fields"]) == ["name"]


def test_renaming_a_rule_to_a_taken_name_is_a_409(client_for, operator_user):
    make_rule(name="chat-errors")
    make_rule(name="chat-slow")
    response = client_for(operator_user).patch("/api/alerts/rules/chat-slow/", {"name": "chat-errors"}, format="json")
    assert response.status_code == 409 and list(response.json()["fields"]) == ["name"]


def test_a_taken_name_with_other_faults_is_a_400(client_for, operator_user):
    make_rule(name="chat-errors")
    response = client_for(operator_user).post("/api/alerts/rules/", {**RULE, "comparator": "~"}, format="json")
    assert response.status_code == 400 and {"name", "comparator"} <= response.json()["fields"].keys()


@pytest.mark.parametrize("name", ["team", "_x", "severity", "alertname", "9lives", "on-call", ""])
def test_the_schemas_label_names_are_those_the_server_takes(client_for, operator_user, name):
    client = client_for(operator_user)
    labels = client.get("/api/schema/?format=json").json()["components"]["schemas"]["AlertRuleRequest"][
        "properties"]["labels"]
    [pattern] = labels["patternProperties"]
    in_schema = re.search(pattern, name) is not None and labels["additionalProperties"] is False
    response = client.post("/api/alerts/rules/", {**RULE, "labels": {name: "x"}}, format="json")
    assert (response.status_code == 201) == in_schema


def test_the_schema_names_label_keys_with_property_names_too(client_for, operator_user):
    schemas = client_for(operator_user).get("/api/schema/?format=json").json()["components"]["schemas"]
    labels = schemas["AlertRuleRequest"]["properties"]["labels"]["propertyNames"]
    assert (labels["pattern"], labels["not"]) == ("^[a-zA-Z_][a-zA-Z0-9_]*$", {"enum": ["alertname", "severity"]})
    assert schemas["AlertRuleRequest"]["properties"]["matchers"]["propertyNames"]["pattern"] == labels["pattern"]


def test_viewers_read_the_rules_but_cannot_change_them(client_for, viewer_user):
    make_rule(name="chat-slow")
    client = client_for(viewer_user)
    assert [rule["name"] for rule in client.get("/api/alerts/rules/").json()["results"]] == ["chat-slow"]
    assert client.post("/api/alerts/rules/", RULE, format="json").status_code == 403
    assert client.patch("/api/alerts/rules/chat-slow/", {"threshold": 1}, format="json").status_code == 403
    assert client.delete("/api/alerts/rules/chat-slow/").status_code == 403
    assert client.post("/api/alerts/receivers/", RECEIVER, format="json").status_code == 403
    assert client.post("/api/alerts/silences/", {"matchers": [{"name": "a", "value": "b"}], "ends_at": soon()},
                       format="json").status_code == 403
    assert client.post("/api/alerts/pack/").status_code == 403
    assert not AuditEvent.objects.exclude(actor="test").exists()


def test_strangers_see_nothing(api):
    assert api.get("/api/alerts/").status_code in (401, 403)
    assert api.get("/api/alerts/rules/").status_code in (401, 403)


def test_operator_creates_a_receiver_with_alertmanagers_defaults(client_for, operator_user):
    response = client_for(operator_user).post("/api/alerts/receivers/", RECEIVER, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["send_resolved"], body["group_by"], body["repeat_interval_seconds"], body["timeout_seconds"]) == (
        True, ["alertname"], 4 * 3600, 5)
    assert AuditEvent.objects.get(action="alert_receiver.create").target == "on-call"


@pytest.mark.parametrize("change, field", [
    ({"url": "ftp://files.example.com/"}, "url"),
    ({"url": "javascript:alert(1)"}, "url"),
    ({"url": "not a url"}, "url"),
    ({"group_by": "alertname"}, "group_by"),
    ({"group_by": ["not a label"]}, "group_by"),
    ({"repeat_interval_seconds": 0}, "repeat_interval_seconds"),
    ({"timeout_seconds": 600}, "timeout_seconds"),
])
def test_bad_receivers_are_a_400_naming_the_field(client_for, operator_user, change, field):
    response = client_for(operator_user).post("/api/alerts/receivers/", {**RECEIVER, **change}, format="json")
    assert response.status_code == 400
    assert field in response.json()["fields"], response.json()


def test_a_taken_receiver_name_is_a_409_naming_name(client_for, operator_user):
    make_receiver("https://hooks.example.com/other")
    response = client_for(operator_user).post("/api/alerts/receivers/", RECEIVER, format="json")
    assert response.status_code == 409 and list(response.json()["fields"]) == ["name"]


def test_a_receiver_shows_its_last_delivery(client_for, operator_user, settings):
    settings.BLAZE_RETRY_ATTEMPTS = 1
    receiver = make_receiver("http://127.0.0.1:9/nothing-listens")
    make_rule(for_seconds=0)
    alerting.evaluate([latency(6)])
    assert notify.drain(10)
    delivery = client_for(operator_user).get(f"/api/alerts/receivers/{receiver.pk}/").json()["delivery"]
    assert delivery["failing"] is True and delivery["attempts"] == 1 and delivery["failed"] == 1
    assert delivery["last_error"].startswith("Could not reach the receiver") and delivery["last_error_at"]


def test_viewers_see_a_receivers_origin_not_its_secret(client_for, viewer_user, operator_user):
    receiver = make_receiver(RECEIVER["url"])
    assert client_for(viewer_user).get(f"/api/alerts/receivers/{receiver.pk}/").json()["url"] == (
        "https://hooks.example.com/...")
    assert client_for(operator_user).get(f"/api/alerts/receivers/{receiver.pk}/").json()["url"] == RECEIVER["url"]


def test_operator_silences_and_expires_and_both_are_audited(client_for, operator_user):
    client = client_for(operator_user)
    matchers = [{"name": "route", "value": "chat", "isRegex": False, "isEqual": True}]
    response = client.post("/api/alerts/silences/", {"matchers": matchers, "ends_at": soon(), "comment": "deploy"},
                           format="json")
    assert response.status_code == 201, response.json()
    assert (response.json()["state"], response.json()["created_by"]) == ("active", "otto")
    expired = client.post(f"/api/alerts/silences/{response.json()['id']}/expire/")
    assert expired.status_code == 200 and expired.json()["state"] == "expired"
    assert list(AuditEvent.objects.filter(action__startswith="alert_silence.").values_list("action", flat=True)
                .order_by("pk")) == ["alert_silence.create", "alert_silence.expire"]


@pytest.mark.parametrize("change, field", [
    ({"ends_at": "2001-01-01T00:00:00Z"}, "ends_at"),
    ({"starts_at": soon(3), "ends_at": soon(2)}, "ends_at"),
    ({"matchers": []}, "matchers"),
    ({"matchers": [{"name": "route", "value": "(", "isRegex": True}]}, "matchers"),
    ({"matchers": [{"name": "route", "value": ".*", "isRegex": True}]}, "matchers"),
    ({"matchers": [{"name": "route", "value": "chat", "isEqual": "yes"}]}, "matchers"),
    ({"matchers": [{"label": "route"}]}, "matchers"),
])
def test_bad_silences_are_a_400_naming_the_field(client_for, operator_user, change, field):
    silence = {"matchers": [{"name": "route", "value": "chat"}], "ends_at": soon(), **change}
    response = client_for(operator_user).post("/api/alerts/silences/", silence, format="json")
    assert response.status_code == 400
    assert field in response.json()["fields"], response.json()


def test_the_active_alerts_show_their_state_suppressed_included(client_for, viewer_user):
    make_rule(for_seconds=0)
    make_rule(name="chat-very-slow", threshold=5.5, for_seconds=600)
    alert_services.alert_silence_create(actor=ACTOR, matchers=[{"name": "route", "value": "embed"}],
                                        ends_at=timezone.now() + datetime.timedelta(hours=1))
    alerting.evaluate([latency(6, "chat"), latency(6, "embed")])
    alerts = client_for(viewer_user).get("/api/alerts/").json()
    assert sorted((a["rule"], a["labels"]["route"], a["state"]) for a in alerts) == [
        ("chat-slow", "chat", "firing"), ("chat-slow", "embed", "suppressed"),
        ("chat-very-slow", "chat", "pending"), ("chat-very-slow", "embed", "pending")]


def test_the_pack_creates_the_built_in_rules_once(client_for, operator_user):
    client = client_for(operator_user)
    first = client.post("/api/alerts/pack/")
    assert first.status_code == 201
    assert len(first.json()["created"]) == 10 and all(rule["builtin"] for rule in first.json()["created"])
    events = AuditEvent.objects.filter(action="alert_rule.create").count()
    again = client.post("/api/alerts/pack/")
    assert (again.status_code, again.json()) == (200, {"created": []})
    assert AuditEvent.objects.filter(action="alert_rule.create").count() == events == 10


def test_the_pack_leaves_a_tuned_rule_as_it_is():
    alert_services.alert_pack_enable(actor=ACTOR)
    rule = AlertRule.objects.get(name="route-latency-high")
    alert_services.alert_rule_update(actor=ACTOR, rule=rule, threshold=10, enabled=False)
    assert alert_services.alert_pack_enable(actor=ACTOR) == []
    rule.refresh_from_db()
    assert (rule.threshold, rule.enabled) == (10, False)


@pytest.mark.parametrize("name, expression, for_seconds", [
    ("breaker-open", "breaker_open == 1", 300),
    ("route-down", "route_targets_available == 0", 30),
    ("route-latency-high", "route_latency_p95_seconds > 5", 300),
    ("engine-ttft-high", "engine_ttft_p95_seconds > 2", 300),
    ("route-error-rate-high", "route_error_ratio > 0.05", 300),
    ("worker-lost", "worker_up == 0", 10),
    ("engine-failed", "engine_failed == 1", 0),
    ("engine-queue-growing", "engine_queue_depth > 32", 60),
    ("worker-cache-thrash", "worker_cache_evictions_per_minute > 3", 300),
    ("budget-soft-limit", "budget_soft_limit_reached == 1", 0),
])
def test_the_pack_holds_the_documented_rules(name, expression, for_seconds):
    alert_services.alert_pack_enable(actor=ACTOR)
    rule = AlertRule.objects.get(name=name)
    assert (rule.expression(), rule.for_seconds, rule.builtin) == (expression, for_seconds, True)


def test_the_schema_documents_the_alert_api(client_for, admin_user):
    response = client_for(admin_user).get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert {"/api/alerts/", "/api/alerts/pack/", "/api/alerts/rules/", "/api/alerts/receivers/{id}/",
            "/api/alerts/silences/{id}/expire/"} <= set(paths)


def test_receiver_changes_and_deletion_are_audited(client_for, operator_user):
    receiver = make_receiver(RECEIVER["url"])
    client = client_for(operator_user)
    client.patch(f"/api/alerts/receivers/{receiver.pk}/", {"send_resolved": False}, format="json")
    client.patch(f"/api/alerts/receivers/{receiver.pk}/", {"enabled": False}, format="json")
    assert client.delete(f"/api/alerts/receivers/{receiver.pk}/").status_code == 204
    events = AuditEvent.objects.filter(action__startswith="alert_receiver.", actor="otto").order_by("pk")
    assert [(event.action, event.changes.get("send_resolved")) for event in events] == [
        ("alert_receiver.update", [True, False]), ("alert_receiver.disable", None),
        ("alert_receiver.delete", [False, None])]


def test_a_silence_deleted_is_audited(client_for, operator_user):
    silence = alert_services.alert_silence_create(actor=ACTOR, matchers=[{"name": "route", "value": "chat"}],
                                                  ends_at=timezone.now() + datetime.timedelta(hours=1))
    assert client_for(operator_user).delete(f"/api/alerts/silences/{silence.pk}/").status_code == 204
    event = AuditEvent.objects.get(action="alert_silence.delete")
    assert event.actor == "otto" and event.changes["matchers"] == ['route="chat"', None]
