"""alerting.evaluate: Prometheus's alert states over the live feed's samples, with an injected `now`,
kept in Redis."""

import datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from alerts import evaluate as alerting
from alerts import services as alert_services
from dashboard import selectors
from telemetry.series import Sample
from tests.alerts.test_setup import ACTOR, latency, make_rule, now_seconds

pytestmark = pytest.mark.django_db


@pytest.fixture
def t0():
    return now_seconds()


def states(alerts):
    return [(alert["rule"], alert["labels"].get("route"), alert["state"]) for alert in alerts]


def test_a_condition_that_holds_is_pending_until_for_has_passed(t0):
    make_rule(for_seconds=60)
    assert states(alerting.evaluate([latency(6)], now=t0)) == [("chat-slow", "chat", "pending")]
    assert states(alerting.evaluate([latency(6)], now=t0 + 59)) == [("chat-slow", "chat", "pending")]
    [alert] = alerting.evaluate([latency(6)], now=t0 + 60)
    assert alert["state"] == "firing"
    assert (alert["activeAt"], alert["startsAt"]) == (alerting.rfc3339(t0), alerting.rfc3339(t0 + 60))


def test_a_rule_without_for_fires_at_once(t0):
    make_rule(for_seconds=0)
    assert states(alerting.evaluate([latency(6)], now=t0)) == [("chat-slow", "chat", "firing")]


def test_a_pending_alert_whose_condition_clears_is_dropped(t0):
    make_rule(for_seconds=60)
    alerting.evaluate([latency(6)], now=t0)
    assert alerting.evaluate([latency(4)], now=t0 + 10) == []
    assert alerting.evaluate([latency(6)], now=t0 + 20)[0]["activeAt"] == alerting.rfc3339(t0 + 20)


def test_a_firing_alert_resolves_when_its_condition_clears(t0):
    make_rule(for_seconds=0)
    alerting.evaluate([latency(6)], now=t0)
    assert alerting.evaluate([latency(4)], now=t0 + 10) == []
    [stored] = alerting._load().values()
    assert (stored.state, stored.resolved_at, stored.ends_at) == ("resolved", t0 + 10, alerting.rfc3339(t0 + 10))


def test_a_series_that_disappears_counts_as_the_condition_being_false(t0):
    make_rule(for_seconds=0)
    alerting.evaluate([latency(6)], now=t0)
    assert alerting.evaluate([], now=t0 + 1) == []
    assert [alert.state for alert in alerting._load().values()] == ["resolved"]


def test_keep_firing_for_holds_a_cleared_alert_firing_that_long(t0):
    make_rule(for_seconds=0, keep_firing_for_seconds=30)
    alerting.evaluate([latency(6)], now=t0)
    assert states(alerting.evaluate([latency(4)], now=t0 + 10)) == [("chat-slow", "chat", "firing")]
    assert states(alerting.evaluate([], now=t0 + 39)) == [("chat-slow", "chat", "firing")]
    assert alerting.evaluate([], now=t0 + 40) == []


def test_keep_firing_for_starts_again_once_the_condition_holds_again(t0):
    make_rule(for_seconds=0, keep_firing_for_seconds=30)
    alerting.evaluate([latency(6)], now=t0)
    alerting.evaluate([latency(4)], now=t0 + 10)
    alerting.evaluate([latency(6)], now=t0 + 20)
    assert states(alerting.evaluate([latency(4)], now=t0 + 45)) == [("chat-slow", "chat", "firing")]
    assert alerting.evaluate([latency(4)], now=t0 + 75) == []


def test_a_resolved_alert_that_holds_again_starts_anew(t0):
    make_rule(for_seconds=0)
    alerting.evaluate([latency(6)], now=t0)
    alerting.evaluate([latency(4)], now=t0 + 10)
    [alert] = alerting.evaluate([latency(6)], now=t0 + 20)
    assert alert["startsAt"] == alerting.rfc3339(t0 + 20)


def test_each_label_set_of_the_series_is_its_own_alert(t0):
    make_rule(for_seconds=0)
    alerts = alerting.evaluate([latency(6, "chat"), latency(7, "embed"), latency(1, "draw")], now=t0)
    assert sorted(states(alerts)) == [("chat-slow", "chat", "firing"), ("chat-slow", "embed", "firing")]
    assert len({alert["fingerprint"] for alert in alerts}) == 2


def test_matchers_select_the_series_a_rule_watches(t0):
    make_rule(for_seconds=0, matchers={"route": "chat"})
    other = Sample("route_error_ratio", 9, {"route": "chat"})
    assert states(alerting.evaluate([latency(6, "chat"), latency(7, "embed"), other], now=t0)) == [
        ("chat-slow", "chat", "firing")]


def test_an_alert_carries_the_series_labels_the_rule_labels_its_name_and_severity(t0):
    make_rule(for_seconds=0, labels={"team": "ml"}, severity="critical")
    [alert] = alerting.evaluate([latency(6)], now=t0)
    labels = {"route": "chat", "team": "ml", "alertname": "chat-slow", "severity": "critical"}
    assert alert["labels"] == labels
    assert alert["fingerprint"] == alerting.fingerprint(labels)


def test_the_fingerprint_is_alertmanagers_hash_of_the_labels():
    assert alerting.fingerprint({}) == "cbf29ce484222325"  # FNV-1a's offset basis: Alertmanager's empty set
    # prometheus/common's own test vector (model/signature_test.go)
    assert int(alerting.fingerprint({"name": "garland, briggs", "fear": "love is not enough"}), 16) == (
        5799056148416392346)
    assert alerting.fingerprint({"a": "1", "b": "2"}) == alerting.fingerprint({"b": "2", "a": "1"})
    assert alerting.fingerprint({"a": "1"}) != alerting.fingerprint({"a": "2"})
    assert len(alerting.fingerprint({"alertname": "x"})) == 16


def test_annotations_fill_in_the_labels_and_the_value(t0):
    make_rule(for_seconds=0, annotations={"summary": "Route {{ $labels.route }}: p95 {{ $value }} s",
                                          "description": "{{$labels.nothing}}at {{ .Value }}"})
    [alert] = alerting.evaluate([latency(6.5)], now=t0)
    assert alert["annotations"] == {"summary": "Route chat: p95 6.5 s", "description": "at 6.5"}


def test_an_alert_has_the_documented_fields(t0):
    make_rule(for_seconds=0)
    [alert] = alerting.evaluate([latency(6)], now=t0)
    assert set(alert) == {"fingerprint", "rule", "state", "labels", "annotations", "value", "activeAt", "startsAt",
                          "endsAt", "generatorURL", "silencedBy"}
    assert (alert["value"], alert["endsAt"], alert["silencedBy"]) == (6, "0001-01-01T00:00:00Z", [])
    assert alert["generatorURL"] == "http://127.0.0.1:8000/alerts/rules/chat-slow/"


@pytest.mark.parametrize("comparator, value, fires", [
    (">", 5, False), (">", 5.1, True), (">=", 5, True), ("<", 5, False), ("<", 4, True), ("<=", 5, True),
    ("==", 5, True), ("==", 4, False), ("!=", 4, True), ("!=", 5, False),
])
def test_each_comparator(t0, comparator, value, fires):
    make_rule(for_seconds=0, comparator=comparator)
    assert bool(alerting.evaluate([latency(value)], now=t0)) is fires


def test_the_alerts_outlive_the_producer_in_redis(t0):
    make_rule(for_seconds=0)
    alerting.evaluate([latency(6)], now=t0)
    assert [alert["startsAt"] for alert in alerting.active_alerts()] == [alerting.rfc3339(t0)]
    # A new producer has nothing in memory: what it finds in Redis carries on.
    assert alerting.evaluate([latency(6)], now=t0 + 30)[0]["startsAt"] == alerting.rfc3339(t0)


def test_disabling_a_rule_resolves_its_alerts(t0):
    rule = make_rule(for_seconds=0, keep_firing_for_seconds=600)
    alerting.evaluate([latency(6)], now=t0)
    alert_services.alert_rule_update(actor=ACTOR, rule=rule, enabled=False)
    assert alerting.evaluate([latency(6)], now=t0 + 1) == []
    assert [alert.state for alert in alerting._load().values()] == ["resolved"]


def test_resolved_alerts_are_forgotten_after_the_retention(t0):
    make_rule(for_seconds=0)
    alerting.evaluate([latency(6)], now=t0)
    alerting.evaluate([], now=t0 + 1)
    alerting.evaluate([], now=t0 + 1 + alerting.RESOLVED_RETENTION + 1)
    assert alerting._load() == {}


def test_a_silenced_firing_alert_is_suppressed(t0):
    make_rule(for_seconds=0)
    now = datetime.datetime.fromtimestamp(t0, datetime.UTC)
    silence = alert_services.alert_silence_create(
        actor=ACTOR, matchers=[{"name": "route", "value": "ch.*", "isRegex": True, "isEqual": True}],
        starts_at=now, ends_at=now + datetime.timedelta(hours=1))
    [alert] = alerting.evaluate([latency(6)], now=t0)
    assert (alert["state"], alert["silencedBy"]) == ("suppressed", [silence.pk])
    assert alerting.active_alerts(now=t0 + 2 * 3600)[0]["state"] == "firing"  # once the silence has ended


def test_firing_alerts_come_first_then_by_severity(t0):
    make_rule(name="a-pending", for_seconds=600, severity="critical")
    make_rule(name="b-warning", for_seconds=0, severity="warning")
    make_rule(name="c-critical", for_seconds=0, severity="critical")
    alerts = alerting.evaluate([latency(6)], now=t0)
    assert [alert["rule"] for alert in alerts] == ["c-critical", "b-warning", "a-pending"]


def gauge(**labels):
    text = text_string_to_metric_families(selectors.prometheus_text().decode())
    return sum(sample.value for family in text for sample in family.samples
               if sample.name == "blaze_alerts" and labels.items() <= sample.labels.items())


def test_the_gauge_counts_the_alerts_by_rule_severity_and_state(t0):
    make_rule(for_seconds=0)
    alerting.evaluate([latency(6, "chat"), latency(6, "embed")], now=t0)
    assert gauge(alertname="chat-slow", severity="warning", state="firing") == 2
    alerting.evaluate([], now=t0 + 1)
    assert gauge(alertname="chat-slow", severity="warning", state="firing") == 0
