"""The alerting pages: /alerts/ lists the active alerts, the rules, the receivers (with their last
delivery) and the silences, with a form to add each; /alerts/rules/<name>/ is one rule (its alerts,
and its form to change it). Every form posts to its own URL, which redirects back on success and
shows the page again with the errors (400) otherwise."""

import datetime

import redis
from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from accounts.audit import Actor
from alerts import evaluate as alerting
from alerts import notify
from alerts import services as alert_services
from alerts.forms import AlertReceiverForm, AlertRuleForm, AlertSilenceForm, labels_text
from alerts.models import AlertReceiver, AlertRule, AlertSilence, matcher_text
from core.errors import InvalidInput

BADGE = {"firing": "open", "pending": "half_open", "suppressed": "expired",
         "critical": "failed", "warning": "degraded", "info": "",
         "active": "on", "expired": "expired"}
SILENCES_SHOWN = 50


def _shown_alerts():
    """The active alerts with what the page adds (None when Redis does not answer)."""
    try:
        alerts = alerting.active_alerts()
    except redis.RedisError:
        return None
    return [{
        **alert, "since": datetime.datetime.fromisoformat(alert["startsAt"] or alert["activeAt"]),
        "state_badge": BADGE[alert["state"]], "severity": alert["labels"].get("severity", ""),
        "severity_badge": BADGE.get(alert["labels"].get("severity"), ""),
        "other_labels": {k: v for k, v in alert["labels"].items() if k not in ("alertname", "severity")},
    } for alert in alerts]


def _silence_form_for(request, alerts):
    """The silence form, filled in with an alert's labels when the page was opened as ?silence=<fingerprint>."""
    alert = next((a for a in alerts or () if a["fingerprint"] == request.GET.get("silence")), None)
    if alert is None:
        return AlertSilenceForm()
    labels = {k: v for k, v in alert["labels"].items() if k != "severity"}
    return AlertSilenceForm(initial={"matchers": labels_text(labels)})


def _page(request, status=200, **forms):
    alerts = _shown_alerts()
    silences = list(AlertSilence.objects.all()[:SILENCES_SHOWN])
    context = {
        "alerts": alerts,
        "rules": AlertRule.objects.all(),
        "receivers": [{"receiver": receiver, "delivery": notify.delivery_status(receiver.pk)}
                      for receiver in AlertReceiver.objects.all()],
        "silences": [{"silence": s, "state": s.state(), "badge": BADGE.get(s.state(), ""),
                      "matchers": [matcher_text(m) for m in s.matchers]} for s in silences],
        "rule_form": forms.get("rule_form") or AlertRuleForm(),
        "receiver_form": forms.get("receiver_form") or AlertReceiverForm(),
        "silence_form": forms.get("silence_form") or _silence_form_for(request, alerts),
    }
    return render(request, "monitoring/alerts.html", context, status=status)


def _submit(request, form, write, **target):
    """Run `write(actor=…, **target, **form.values())` if the form reads; the result, or None with the
    form holding what is wrong."""
    if not form.is_valid():
        return None
    try:
        return write(actor=Actor.from_request(request), **target, **form.values())
    except InvalidInput as exc:
        form.show_error(exc)
        return None


@permission_required("monitoring.view_alertrule", raise_exception=True)
def alerts_page(request):
    return _page(request)


@permission_required("monitoring.add_alertrule", raise_exception=True)
@require_POST
def pack_enable(request):
    created = alert_services.alert_pack_enable(actor=Actor.from_request(request))
    if created:
        messages.success(request, f"Built-in alert pack enabled: {len(created)} rules created.")
    else:
        messages.info(request, "The built-in alert pack is enabled already; nothing changed.")
    return redirect("alerts:list")


@permission_required("monitoring.add_alertrule", raise_exception=True)
@require_POST
def rule_create(request):
    form = AlertRuleForm(request.POST)
    rule = _submit(request, form, alert_services.alert_rule_create)
    if rule is None:
        return _page(request, status=400, rule_form=form)
    messages.success(request, f"Rule {rule.name} created.")
    return redirect("alerts:list")


@permission_required("monitoring.view_alertrule", raise_exception=True)
def rule_page(request, name):
    rule = get_object_or_404(AlertRule, name=name)
    form, status = AlertRuleForm.of(rule), 200
    if request.method == "POST":
        if not request.user.has_perm("monitoring.change_alertrule"):
            raise PermissionDenied
        form = AlertRuleForm(request.POST)
        changed = _submit(request, form, alert_services.alert_rule_update, rule=rule)
        if changed is not None:
            messages.success(request, f"Rule {changed.name} saved.")
            return redirect("alerts:rule", changed.name)
        rule.refresh_from_db()
        status = 400
    alerts = [alert for alert in _shown_alerts() or () if alert["rule"] == rule.name]
    return render(request, "monitoring/alert_rule.html", {"rule": rule, "form": form, "alerts": alerts},
                  status=status)


@permission_required("monitoring.change_alertrule", raise_exception=True)
@require_POST
def rule_toggle(request, name):
    rule = get_object_or_404(AlertRule, name=name)
    alert_services.alert_rule_update(actor=Actor.from_request(request), rule=rule, enabled=not rule.enabled)
    messages.success(request, f"Rule {rule.name} {'enabled' if rule.enabled else 'disabled'}.")
    return redirect("alerts:list")


@permission_required("monitoring.delete_alertrule", raise_exception=True)
@require_POST
def rule_delete(request, name):
    rule = get_object_or_404(AlertRule, name=name)
    alert_services.alert_rule_delete(actor=Actor.from_request(request), rule=rule)
    messages.success(request, f"Rule {name} deleted.")
    return redirect("alerts:list")


@permission_required("monitoring.add_alertreceiver", raise_exception=True)
@require_POST
def receiver_create(request):
    form = AlertReceiverForm(request.POST)
    receiver = _submit(request, form, alert_services.alert_receiver_create)
    if receiver is None:
        return _page(request, status=400, receiver_form=form)
    messages.success(request, f"Receiver {receiver.name} created.")
    return redirect("alerts:list")


@permission_required("monitoring.change_alertreceiver", raise_exception=True)
@require_POST
def receiver_toggle(request, pk):
    receiver = get_object_or_404(AlertReceiver, pk=pk)
    alert_services.alert_receiver_update(actor=Actor.from_request(request), receiver=receiver,
                                         enabled=not receiver.enabled)
    messages.success(request, f"Receiver {receiver.name} {'enabled' if receiver.enabled else 'disabled'}.")
    return redirect("alerts:list")


@permission_required("monitoring.delete_alertreceiver", raise_exception=True)
@require_POST
def receiver_delete(request, pk):
    receiver = get_object_or_404(AlertReceiver, pk=pk)
    alert_services.alert_receiver_delete(actor=Actor.from_request(request), receiver=receiver)
    messages.success(request, f"Receiver {receiver.name} deleted.")
    return redirect("alerts:list")


@permission_required("monitoring.add_alertsilence", raise_exception=True)
@require_POST
def silence_create(request):
    form = AlertSilenceForm(request.POST)
    silence = _submit(request, form, alert_services.alert_silence_create)
    if silence is None:
        return _page(request, status=400, silence_form=form)
    messages.success(request, f"Silence {silence.pk} created, until {silence.ends_at:%Y-%m-%d %H:%M} UTC.")
    return redirect("alerts:list")


@permission_required("monitoring.change_alertsilence", raise_exception=True)
@require_POST
def silence_expire(request, pk):
    silence = get_object_or_404(AlertSilence, pk=pk)
    alert_services.alert_silence_expire(actor=Actor.from_request(request), silence=silence)
    messages.success(request, f"Silence {silence.pk} expired.")
    return redirect("alerts:list")
