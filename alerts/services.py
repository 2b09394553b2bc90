"""Writes to the alert rules, receivers and silences, and the built-in alert pack. Each change is
checked by its model's rules (`full_clean`: a broken one is an InvalidInput naming the field) and
records one audit event, in the same transaction."""

from django.db import transaction
from django.utils import timezone

from accounts import audit
from alerts import notify
from alerts.models import AlertReceiver, AlertRule, AlertSilence
from core import errors

PACK = [
    {"name": "breaker-open", "series": "breaker_open", "comparator": "==", "threshold": 1, "for_seconds": 300,
     "severity": "warning",
     "annotations": {"summary": "The circuit breaker of {{ $labels.target }} has been open for 5 minutes.",
                     "description": "Its target keeps failing; requests go to the route's other targets."}},
    {"name": "route-down", "series": "route_targets_available", "comparator": "==", "threshold": 0,
     "for_seconds": 30, "severity": "critical",
     "annotations": {"summary": "Route {{ $labels.route }} has no target that can take a request.",
                     "description": "Every target of the route is down, disabled or behind an open breaker."}},
    {"name": "route-latency-high", "series": "route_latency_p95_seconds", "comparator": ">", "threshold": 5,
     "for_seconds": 300, "severity": "warning",
     "annotations": {"summary": "Route {{ $labels.route }}: p95 latency {{ $value }} s, over 5 s for 5 minutes."}},
    {"name": "engine-ttft-high", "series": "engine_ttft_p95_seconds", "comparator": ">", "threshold": 2,
     "for_seconds": 300, "severity": "warning",
     "annotations": {"summary": "Engine {{ $labels.engine }}: p95 time to first token {{ $value }} s, "
                                "over 2 s for 5 minutes."}},
    {"name": "route-error-rate-high", "series": "route_error_ratio", "comparator": ">", "threshold": 0.05,
     "for_seconds": 300, "severity": "critical",
     "annotations": {"summary": "Route {{ $labels.route }}: {{ $value }} of requests fail, over 5 % for 5 minutes."}},
    {"name": "worker-lost", "series": "worker_up", "comparator": "==", "threshold": 0, "for_seconds": 10,
     "severity": "critical",
     "annotations": {"summary": "Worker {{ $labels.worker }} stopped sending heartbeats.",
                     "description": "Its engines are served by the other workers, if any hold them."}},
    {"name": "engine-failed", "series": "engine_failed", "comparator": "==", "threshold": 1, "for_seconds": 0,
     "severity": "critical",
     "annotations": {"summary": "Engine {{ $labels.engine }} is FAILED."}},
    {"name": "engine-queue-growing", "series": "engine_queue_depth", "comparator": ">", "threshold": 32,
     "for_seconds": 60, "severity": "warning",
     "annotations": {"summary": "Engine {{ $labels.engine }}: {{ $value }} requests waiting, over 32 for a minute."}},
    {"name": "worker-cache-thrash", "series": "worker_cache_evictions_per_minute", "comparator": ">",
     "threshold": 3, "for_seconds": 300, "severity": "warning",
     "annotations": {"summary": "Worker {{ $labels.worker }} evicts {{ $value }} models a minute: its cache "
                                "is too small for the engines it serves."}},
    {"name": "budget-soft-limit", "series": "budget_soft_limit_reached", "comparator": "==", "threshold": 1,
     "for_seconds": 0, "severity": "warning",
     "annotations": {"summary": "Budget {{ $labels.budget }} has reached its soft limit.",
                     "description": "Requests still pass until its hard limit; the Usage page shows what is left."}},
]


def _create(actor, action, instance):
    errors.checked(instance).save()
    audit.record(actor=actor, action=action, target=instance, changes=audit.diff({}, instance.audit_fields()))
    return instance


def _update(actor, prefix, instance, fields):
    """Set `fields`, check and save; audited as <prefix>.update, or .enable/.disable when only that changed."""
    before = instance.audit_fields()
    for name, value in fields.items():
        setattr(instance, name, value)
    errors.checked(instance).save()
    changes = audit.diff(before, instance.audit_fields())
    if changes:
        action = f"{prefix}.update"
        if set(changes) == {"enabled"}:
            action = f"{prefix}.enable" if instance.enabled else f"{prefix}.disable"
        audit.record(actor=actor, action=action, target=instance, changes=changes)
    return instance


def _delete(actor, action, instance):
    audit.record(actor=actor, action=action, target=instance, changes=audit.diff(instance.audit_fields(), {}))
    instance.delete()


@transaction.atomic
def alert_rule_create(*, actor, **fields):
    return _create(actor, "alert_rule.create", AlertRule(**fields))


@transaction.atomic
def alert_rule_update(*, actor, rule, **fields):
    return _update(actor, "alert_rule", rule, fields)


@transaction.atomic
def alert_rule_delete(*, actor, rule):
    _delete(actor, "alert_rule.delete", rule)


@transaction.atomic
def alert_receiver_create(*, actor, **fields):
    return _create(actor, "alert_receiver.create", AlertReceiver(**fields))


@transaction.atomic
def alert_receiver_update(*, actor, receiver, **fields):
    return _update(actor, "alert_receiver", receiver, fields)


@transaction.atomic
def alert_receiver_delete(*, actor, receiver):
    receiver_id = receiver.pk
    _delete(actor, "alert_receiver.delete", receiver)
    transaction.on_commit(lambda: notify.forget_receiver(receiver_id))


@transaction.atomic
def alert_silence_create(*, actor, **fields):
    return _create(actor, "alert_silence.create", AlertSilence(created_by=actor.describe()[:200], **fields))


@transaction.atomic
def alert_silence_update(*, actor, silence, **fields):
    return _update(actor, "alert_silence", silence, fields)


@transaction.atomic
def alert_silence_expire(*, actor, silence):
    """End a silence now (Alertmanager's expire): the alerts it muted are notified again."""
    now = timezone.now()
    if silence.ends_at <= now:
        return silence
    before = silence.audit_fields()
    silence.starts_at, silence.ends_at = min(silence.starts_at, now), now
    silence.save(update_fields=["starts_at", "ends_at", "updated_at"])
    audit.record(actor=actor, action="alert_silence.expire", target=silence,
                 changes=audit.diff(before, silence.audit_fields()))
    return silence


@transaction.atomic
def alert_silence_delete(*, actor, silence):
    _delete(actor, "alert_silence.delete", silence)


@transaction.atomic
def alert_pack_enable(*, actor):
    """Create the built-in rules (PACK) that do not exist yet, by name; returns those created. Rules
    that exist are left as they are (an operator may have tuned or disabled them), so running it
    again changes nothing."""
    existing = set(AlertRule.objects.filter(name__in=[rule["name"] for rule in PACK]).values_list("name", flat=True))
    return [alert_rule_create(actor=actor, builtin=True, **rule) for rule in PACK if rule["name"] not in existing]
