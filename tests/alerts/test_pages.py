"""/alerts/: operators see the active alerts, the rules, the receivers with their deliveries and the
silences, and change them in the browser; viewers only look."""

import datetime
import re

import pytest
from django.utils import timezone

from accounts.models import AuditEvent
from alerts import evaluate as alerting
from alerts import notify
from alerts import services as alert_services
from alerts.models import AlertReceiver, AlertRule, AlertSilence
from tests.alerts.test_setup import ACTOR, latency, make_receiver, make_rule

pytestmark = pytest.mark.django_db

RULE_FORM = {"name": "chat-errors", "series": "route_error_ratio", "matchers": 'route="chat"', "comparator": ">",
             "threshold": "0.05", "for_seconds": "300", "keep_firing_for_seconds": "0", "severity": "critical",
             "labels": "team=ml", "summary": "Route {{ $labels.route }} fails", "description": "", "enabled": "on"}
RECEIVER_FORM = {"name": "on-call", "url": "https://hooks.example.com/alerts", "group_by": "alertname, route",
                 "repeat_interval_seconds": "3600", "timeout_seconds": "5", "send_resolved": "on"}


@pytest.fixture
def operator(client, operator_user):
    client.force_login(operator_user)
    return client


@pytest.fixture
def viewer(client, viewer_user):
    client.force_login(viewer_user)
    return client


def page(client, path="/alerts/"):
    response = client.get(path)
    assert response.status_code == 200
    return response.content.decode()


def test_the_page_lists_the_active_alerts_with_state_severity_labels_and_summary(operator):
    make_rule(for_seconds=0, severity="critical")
    alerting.evaluate([latency(6.5)])
    alerts = page(operator).split('id="alerts"')[1].split("</table>")[0]
    assert ">firing<" in alerts and ">critical<" in alerts and 'route="chat"' in alerts
    assert "Route chat: p95 6.5 s" in alerts and ">6.5<" in alerts


def test_the_page_needs_no_inline_script_and_every_form_posts_with_csrf(operator):
    make_rule()
    html = page(operator)
    scripts = re.findall(r"<script[^>]*>", html)
    assert scripts and all(" src=" in tag for tag in scripts)  # files only: the policy refuses inline script
    assert not re.search(r"\son[a-z]+=", html) and "style=" not in html
    forms = re.findall(r"<form[^>]*>.*?</form>", html, re.DOTALL)
    assert len(forms) >= 6
    assert all('method="post"' in form and "csrfmiddlewaretoken" in form for form in forms)
    ids = re.findall(r'\sid="([^"]+)"', html)
    assert len(ids) == len(set(ids))


def test_operator_adds_a_rule_in_the_browser(operator):
    response = operator.post("/alerts/rules/", RULE_FORM)
    assert response.status_code == 302
    rule = AlertRule.objects.get(name="chat-errors")
    assert (rule.matchers, rule.labels, rule.annotations) == (
        {"route": "chat"}, {"team": "ml"}, {"summary": "Route {{ $labels.route }} fails"})
    assert AuditEvent.objects.filter(action="alert_rule.create", actor="otto").exists()


@pytest.mark.parametrize("change, message", [
    ({"matchers": 'worker="w1"'}, "is not a label of this series"),
    ({"for_seconds": "-1"}, "greater than or equal to 0"),
    ({"summary": "{{ $humanize }}"}, "is not understood"),
    ({"matchers": "route"}, "Could not read"),
])
def test_a_bad_rule_shows_what_is_wrong_on_the_page(operator, change, message):
    response = operator.post("/alerts/rules/", {**RULE_FORM, **change})
    assert response.status_code == 400
    form = response.content.decode().split('id="rule-form"')[1].split("</form>")[0]
    assert message in form and 'class="field-error"' in form
    assert not AlertRule.objects.exists()


def test_operator_disables_and_deletes_a_rule(operator):
    make_rule(name="chat-slow")
    operator.post("/alerts/rules/chat-slow/toggle/")
    assert not AlertRule.objects.get(name="chat-slow").enabled
    operator.post("/alerts/rules/chat-slow/delete/")
    assert not AlertRule.objects.exists()
    assert list(AuditEvent.objects.filter(action__in=["alert_rule.disable", "alert_rule.delete"])
                .values_list("action", flat=True).order_by("pk")) == ["alert_rule.disable", "alert_rule.delete"]


def test_the_rule_page_shows_the_rule_and_its_alerts_and_changes_it(operator):
    make_rule(name="chat-slow", for_seconds=0)
    alerting.evaluate([latency(6)])
    html = page(operator, "/alerts/rules/chat-slow/")
    assert "route_latency_p95_seconds &gt; 5" in html and "Route chat: p95 6 s" in html
    response = operator.post("/alerts/rules/chat-slow/", {**RULE_FORM, "name": "chat-slow", "threshold": "7"})
    assert response.status_code == 302 and AlertRule.objects.get(name="chat-slow").threshold == 7


def test_operator_adds_a_receiver_and_sees_its_failed_delivery(operator, settings):
    settings.BLAZE_RETRY_ATTEMPTS = 1
    assert operator.post("/alerts/receivers/", RECEIVER_FORM).status_code == 302
    receiver = AlertReceiver.objects.get(name="on-call")
    assert receiver.group_by == ["alertname", "route"] and receiver.repeat_interval_seconds == 3600
    alert_services.alert_receiver_update(actor=ACTOR, receiver=receiver, url="http://127.0.0.1:9/")
    make_rule(for_seconds=0)
    alerting.evaluate([latency(6)])
    assert notify.drain(10)
    receivers = page(operator).split('id="receivers"')[1].split("</table>")[0]
    assert ">failing<" in receivers and "Could not reach the receiver" in receivers and "1 attempt" in receivers


def test_a_receiver_url_that_is_not_http_shows_on_the_field(operator):
    response = operator.post("/alerts/receivers/", {**RECEIVER_FORM, "url": "ftp://files.example.com/"})
    assert response.status_code == 400
    form = response.content.decode().split('id="receiver-form"')[1].split("</form>")[0]
    assert "Enter a valid URL." in form
    assert not AlertReceiver.objects.exists()


def test_operator_silences_with_matchers_and_an_expiry_then_expires_it(operator):
    response = operator.post("/alerts/silences/", {"matchers": 'alertname="chat-slow", route=~"ch.*"',
                                                   "duration": "2h", "comment": "deploying"})
    assert response.status_code == 302
    silence = AlertSilence.objects.get()
    assert silence.matchers == [{"name": "alertname", "value": "chat-slow", "isRegex": False, "isEqual": True},
                                {"name": "route", "value": "ch.*", "isRegex": True, "isEqual": True}]
    assert abs((silence.ends_at - timezone.now()) - datetime.timedelta(hours=2)) < datetime.timedelta(minutes=1)
    assert silence.created_by == "otto"
    operator.post(f"/alerts/silences/{silence.pk}/expire/")
    assert AlertSilence.objects.get().state() == "expired"


def test_a_bad_silence_shows_what_is_wrong(operator):
    response = operator.post("/alerts/silences/", {"matchers": 'route="chat"', "duration": "soon", "comment": "x"})
    assert response.status_code == 400
    assert "A duration such as 30m" in response.content.decode()


def test_the_silence_link_fills_in_the_alerts_labels(operator):
    make_rule(for_seconds=0)
    [alert] = alerting.evaluate([latency(6)])
    form = page(operator, f"/alerts/?silence={alert['fingerprint']}").split('id="silence-form"')[1]
    assert 'value="route=&quot;chat&quot;, alertname=&quot;chat-slow&quot;"' in form


def test_the_button_enables_the_built_in_pack(operator):
    assert operator.post("/alerts/pack/").status_code == 302
    assert AlertRule.objects.filter(builtin=True).count() == 10
    assert "route-down" in page(operator)


def test_viewers_see_the_page_without_forms_and_cannot_change_anything(viewer):
    make_rule(name="chat-slow")
    html = page(viewer)
    assert "chat-slow" in html and "<form" not in html.split("<main>")[1]
    assert viewer.post("/alerts/rules/", RULE_FORM).status_code == 403
    assert viewer.post("/alerts/rules/chat-slow/delete/").status_code == 403
    assert viewer.post("/alerts/rules/chat-slow/", RULE_FORM).status_code == 403
    assert viewer.post("/alerts/pack/").status_code == 403
    assert AlertRule.objects.count() == 1


def test_strangers_are_sent_to_sign_in(client):
    receiver = make_receiver("https://example.com/")
    assert client.get("/alerts/").status_code in (302, 403)
    assert client.post(f"/alerts/receivers/{receiver.pk}/delete/").status_code in (302, 403)
    assert AlertReceiver.objects.filter(pk=receiver.pk).exists()
