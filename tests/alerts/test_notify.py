"""alerts.notify: Alertmanager's webhook (version 4) posted to a loopback receiver: grouping,
dedup, repeat, resolved notices, silences, retries, and a hanging receiver that must not hold up the
evaluation."""

import datetime
import time

import pytest
from django.urls import reverse
from django.utils import timezone

from alerts import evaluate as alerting
from alerts import notify
from alerts import services as alert_services
from telemetry.series import Sample
from tests.alerts.test_setup import ACTOR, Loopback, latency, make_receiver, make_rule

pytestmark = pytest.mark.django_db
T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z


@pytest.fixture(autouse=True)
def _quick_retries(settings):
    settings.BLAZE_RETRY_ATTEMPTS = 3
    settings.BLAZE_RETRY_BASE_SECONDS, settings.BLAZE_RETRY_MAX_DELAY_SECONDS = 0.01, 0.05


@pytest.fixture
def hook():
    with Loopback() as loopback:
        yield loopback
        assert notify.drain(10), "a delivery was still running"


def posted(hook):
    """The payloads the receiver got once every queued delivery has ended."""
    assert notify.drain(10)
    return hook.received


def test_a_firing_alert_is_posted_as_alertmanagers_webhook_version_4(hook):
    make_receiver(hook.url)
    make_rule(for_seconds=0)
    alerting.evaluate([latency(6)], now=T0)
    labels = {"alertname": "chat-slow", "route": "chat", "severity": "warning"}
    assert posted(hook) == [{
        "version": "4",
        "groupKey": '{}/{receiver="on-call"}:{alertname="chat-slow"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "on-call",
        "groupLabels": {"alertname": "chat-slow"},
        "commonLabels": labels,
        "commonAnnotations": {"summary": "Route chat: p95 6 s"},
        "externalURL": "http://127.0.0.1:8000",
        "alerts": [{
            "status": "firing", "labels": labels, "annotations": {"summary": "Route chat: p95 6 s"},
            "startsAt": "2027-01-15T08:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://127.0.0.1:8000/alerts/rules/chat-slow/",
            "fingerprint": alerting.fingerprint(labels),
        }],
    }]


def test_a_pending_alert_is_not_posted(hook):
    make_receiver(hook.url)
    make_rule(for_seconds=60)
    alerting.evaluate([latency(6)], now=T0)
    assert posted(hook) == []


def test_the_same_firing_alerts_are_posted_once(hook):
    make_receiver(hook.url)
    make_rule(for_seconds=0)
    for second in range(3):
        alerting.evaluate([latency(6)], now=T0 + second)
    assert len(posted(hook)) == 1


def test_a_new_alert_of_the_group_is_posted_with_the_others(hook):
    make_receiver(hook.url)
    make_rule(for_seconds=0)
    alerting.evaluate([latency(6, "chat")], now=T0)
    alerting.evaluate([latency(6, "chat"), latency(7, "embed")], now=T0 + 1)
    first, second = posted(hook)
    assert [alert["labels"]["route"] for alert in second["alerts"]] == ["chat", "embed"]
    assert second["commonLabels"] == {"alertname": "chat-slow", "severity": "warning"}
    assert second["commonAnnotations"] == {}


def test_a_group_that_keeps_firing_is_posted_again_after_the_repeat_interval(hook):
    make_receiver(hook.url, repeat_interval_seconds=60)
    make_rule(for_seconds=0)
    alerting.evaluate([latency(6)], now=T0)
    alerting.evaluate([latency(6)], now=T0 + 59)
    assert len(posted(hook)) == 1
    alerting.evaluate([latency(6)], now=T0 + 60)
    alerting.evaluate([latency(6)], now=T0 + 61)
    assert [payload["status"] for payload in posted(hook)] == ["firing", "firing"]


def test_a_resolved_alert_is_posted_as_resolved(hook):
    make_receiver(hook.url)
    make_rule(for_seconds=0)
    alerting.evaluate([latency(6)], now=T0)
    alerting.evaluate([latency(4)], now=T0 + 30)
    alerting.evaluate([], now=T0 + 31)
    _, resolved = posted(hook)
    assert resolved["status"] == "resolved"
    [alert] = resolved["alerts"]
    assert (alert["status"], alert["startsAt"], alert["endsAt"]) == (
        "resolved", "2027-01-15T08:00:00Z", "2027-01-15T08:00:30Z")


def test_one_alert_resolving_in_a_group_that_still_fires_is_posted(hook):
    make_receiver(hook.url)
    make_rule(for_seconds=0)
    alerting.evaluate([latency(6, "chat"), latency(6, "embed")], now=T0)
    alerting.evaluate([latency(6, "chat")], now=T0 + 1)
    _, notice = posted(hook)
    assert notice["status"] == "firing"
    assert [(a["labels"]["route"], a["status"]) for a in notice["alerts"]] == [
        ("chat", "firing"), ("embed", "resolved")]


def test_without_send_resolved_no_resolved_notice_is_posted(hook):
    make_receiver(hook.url, send_resolved=False)
    make_rule(for_seconds=0)
    alerting.evaluate([latency(6)], now=T0)
    alerting.evaluate([], now=T0 + 1)
    assert [payload["status"] for payload in posted(hook)] == ["firing"]
    alerting.evaluate([latency(6)], now=T0 + 2)  # firing again after all resolved: a new notice
    assert len(posted(hook)) == 2


def test_alerts_are_grouped_by_the_receivers_labels(hook):
    make_receiver(hook.url, group_by=["route"])
    make_rule(for_seconds=0)
    make_rule(name="chat-very-slow", threshold=5.5, for_seconds=0)
    alerting.evaluate([latency(6, "chat"), latency(6, "embed")], now=T0)
    groups = {payload["groupKey"]: payload for payload in posted(hook)}
    assert sorted(groups) == ['{}/{receiver="on-call"}:{route="chat"}', '{}/{receiver="on-call"}:{route="embed"}']
    chat = groups['{}/{receiver="on-call"}:{route="chat"}']
    assert chat["groupLabels"] == {"route": "chat"}
    assert sorted(alert["labels"]["alertname"] for alert in chat["alerts"]) == ["chat-slow", "chat-very-slow"]


def test_each_receiver_gets_its_own_notice(hook):
    make_receiver(hook.url, name="first")
    make_receiver(hook.url, name="second")
    make_receiver(hook.url, name="off", enabled=False)
    make_rule(for_seconds=0)
    alerting.evaluate([latency(6)], now=T0)
    assert sorted(payload["receiver"] for payload in posted(hook)) == ["first", "second"]


def test_silenced_alerts_are_not_posted(hook):
    make_receiver(hook.url)
    make_rule(for_seconds=0)
    alert_services.alert_silence_create(actor=ACTOR, matchers=[{"name": "route", "value": "chat"}],
                                        ends_at=timezone.now() + datetime.timedelta(hours=1))
    alerting.evaluate([latency(6, "chat"), latency(6, "embed")])
    [notice] = posted(hook)
    assert [alert["labels"]["route"] for alert in notice["alerts"]] == ["embed"]


def test_an_alert_is_posted_once_its_silence_is_expired(hook):
    make_receiver(hook.url)
    make_rule(for_seconds=0)
    silence = alert_services.alert_silence_create(actor=ACTOR, matchers=[{"name": "alertname", "value": "chat-slow"}],
                                                  ends_at=timezone.now() + datetime.timedelta(hours=1))
    alerting.evaluate([latency(6)])
    assert posted(hook) == []
    alert_services.alert_silence_expire(actor=ACTOR, silence=silence)
    alerting.evaluate([latency(6)])
    assert len(posted(hook)) == 1


def test_a_server_error_is_retried_until_it_is_delivered(hook):
    receiver = make_receiver(hook.url)
    make_rule(for_seconds=0)
    hook.answers = [500, 503]
    alerting.evaluate([latency(6)], now=T0)
    assert len(posted(hook)) == 3
    status = notify.delivery_status(receiver.pk)
    assert (status["attempts"], status["last_status"], status["delivered"], status["failing"]) == (3, 200, 1, False)


def test_a_client_error_is_not_retried(hook):
    receiver = make_receiver(hook.url)
    make_rule(for_seconds=0)
    hook.answers = [400]
    alerting.evaluate([latency(6)], now=T0)
    assert len(posted(hook)) == 1
    status = notify.delivery_status(receiver.pk)
    assert (status["attempts"], status["last_status"], status["failing"]) == (1, 400, True)
    assert status["last_error"] == 'HTTP 400: {"error": "no"}'


def test_a_notice_that_fails_every_attempt_is_tried_again_a_minute_later(hook):
    receiver = make_receiver(hook.url)
    make_rule(for_seconds=0)
    hook.answers = [500, 500, 500]
    alerting.evaluate([latency(6)], now=T0)
    assert len(posted(hook)) == 3
    assert notify.delivery_status(receiver.pk)["failed"] == 1
    alerting.evaluate([latency(6)], now=T0 + 59)
    assert len(posted(hook)) == 3
    alerting.evaluate([latency(6)], now=T0 + notify.FAILED_RETRY_SECONDS)
    assert len(posted(hook)) == 4
    assert notify.delivery_status(receiver.pk)["failing"] is False


def test_an_unreachable_receiver_is_recorded():
    with Loopback() as gone:
        url = gone.url
    receiver = make_receiver(url)
    make_rule(for_seconds=0)
    alerting.evaluate([latency(6)], now=T0)
    assert notify.drain(10)
    status = notify.delivery_status(receiver.pk)
    assert status["attempts"] == 3 and status["last_status"] is None
    assert status["last_error"].startswith("Could not reach the receiver (ConnectError")


def test_a_hanging_receiver_does_not_hold_up_the_evaluation(hook, settings):
    settings.BLAZE_RETRY_ATTEMPTS = 2
    hook.hang = 3
    receiver = make_receiver(hook.url, timeout_seconds=0.2)
    make_rule(for_seconds=0)
    reverse("alerts:list")  # the URL conf loads on first use (the producer's process has it loaded)
    for second in range(3):  # a new alert each interval: a new notice each time
        started = time.perf_counter()
        alerting.evaluate([latency(6, f"route-{n}") for n in range(second + 1)], now=T0 + second)
        assert time.perf_counter() - started < 0.2
    assert notify.drain(10)
    assert notify.delivery_status(receiver.pk)["last_error"] == "No answer within 0.2 s (ReadTimeout)."


def test_the_external_url_comes_from_the_settings(hook, settings):
    settings.BLAZE_EXTERNAL_URL = "https://blaze.example.com/"
    make_receiver(hook.url)
    make_rule(for_seconds=0)
    alerting.evaluate([Sample("route_latency_p95_seconds", 6, {"route": "chat"})], now=T0)
    [notice] = posted(hook)
    assert notice["externalURL"] == "https://blaze.example.com"
    assert notice["alerts"][0]["generatorURL"] == "https://blaze.example.com/alerts/rules/chat-slow/"


def test_deleting_a_receiver_forgets_its_log_and_delivery(hook, django_capture_on_commit_callbacks):
    receiver = make_receiver(hook.url)
    make_rule(for_seconds=0)
    alerting.evaluate([latency(6)], now=T0)
    assert notify.drain(10)
    with django_capture_on_commit_callbacks(execute=True):
        alert_services.alert_receiver_delete(actor=ACTOR, receiver=receiver)
    assert notify.delivery_status(receiver.pk)["attempts"] == 0
