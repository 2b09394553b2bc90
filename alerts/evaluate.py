"""Alert rules evaluated against the live feed's samples, with Prometheus's semantics.

`evaluate(samples, now)` runs once per interval in the feed's producer. Each sample a rule selects
is an alert instance, known by its fingerprint (Alertmanager's hash of its labels: the sample's, the
rule's, `alertname` and `severity`). An instance whose condition holds is pending, and firing once it
has held for the rule's `for`; when the condition clears (or its series is gone) a pending one is
dropped and a firing one resolves, after `keep_firing_for` if the rule has one. A disabled or
deleted rule's alerts resolve at once. Resolved alerts are kept RESOLVED_RETENTION for the resolved
notices, then forgotten.

The alerts live in one Redis hash (fingerprint → JSON), shared by every process: a restarted
producer carries on with the same `startsAt`, and the pages and the API read them with
`active_alerts()`. Notifications are handed to `alerts.notify`, which never waits on a receiver.
"""

import datetime
import json
from dataclasses import asdict, dataclass

from django.urls import reverse
from django.utils import timezone

from alerts import metrics as alert_metrics
from alerts import notify
from alerts.models import AlertRule, AlertSilence, expand
from core import shared_state

PENDING, FIRING, RESOLVED, SUPPRESSED = "pending", "firing", "resolved", "suppressed"
RESOLVED_RETENTION = 15 * 60  # as Prometheus keeps resolved alerts to notify about
ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt of an alert that has not ended
SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


def _alerts_key():
    return shared_state.key("alerts", "active")


def rfc3339(seconds):
    """As Go writes a time in JSON (RFC 3339, UTC): 2027-01-15T08:00:00Z, 2027-01-15T08:00:00.25Z."""
    text = datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0")
    return text.rstrip(".") + "Z"


def fingerprint(labels):
    """Alertmanager's fingerprint of a label set: FNV-1a (64 bit) over the sorted names and values,
    each followed by a 0xff byte, as 16 hex digits; the same labels give the same alert anywhere."""
    digest = 0xCBF29CE484222325
    for name in sorted(labels):
        for part in (name, labels[name]):
            for byte in part.encode() + b"\xff":
                digest = ((digest ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{digest:016x}"


@dataclass
class Alert:
    """One alert instance as stored: `active_at` when its condition began to hold, `fired_at` when it
    began firing, `resolved_at` when it resolved, `keep_firing_since` when its condition cleared while
    the rule keeps it firing (times in seconds since the epoch)."""

    fingerprint: str
    rule: str
    labels: dict
    annotations: dict
    state: str
    value: float
    active_at: float
    fired_at: float | None = None
    resolved_at: float | None = None
    keep_firing_since: float | None = None
    rule_id: int | None = None

    @property
    def starts_at(self):
        return rfc3339(self.fired_at) if self.fired_at is not None else None

    @property
    def ends_at(self):
        return rfc3339(self.resolved_at) if self.resolved_at is not None else ZERO_TIME

    @property
    def generator_url(self):
        return notify.external_url() + reverse("alerts:rule", args=[self.rule])

    def as_dict(self, silenced_by=()):
        """The alert as the API, the pages and the live feed show it. `state`: pending, firing, or
        suppressed (firing, but silenced: no notification is sent)."""
        return {
            "fingerprint": self.fingerprint, "rule": self.rule,
            "state": SUPPRESSED if self.state == FIRING and silenced_by else self.state,
            "labels": self.labels, "annotations": self.annotations, "value": self.value,
            "activeAt": rfc3339(self.active_at), "startsAt": self.starts_at, "endsAt": self.ends_at,
            "generatorURL": self.generator_url, "silencedBy": list(silenced_by),
        }


def _alert_labels(rule, sample):
    return {**sample.labels, **rule.labels, "alertname": rule.name, "severity": rule.severity}


def _holding(rules, samples):
    """{fingerprint: (rule, labels, value)} of every selected sample whose condition holds now."""
    holding = {}
    for rule in rules:
        for sample in samples:
            if rule.selects(sample) and rule.holds(sample.value):
                labels = _alert_labels(rule, sample)
                holding[fingerprint(labels)] = (rule, labels, sample.value)
    return holding


def step(rules, samples, alerts, now):
    """The alerts after one evaluation at `now`: `alerts` ({fingerprint: Alert}) as they were, `rules`
    the enabled ones. Returns the new {fingerprint: Alert}; the ones left out are to be forgotten."""
    holding = _holding(rules, samples)
    rules_by_id = {rule.pk: rule for rule in rules}
    after = {}
    for fp, (rule, labels, value) in holding.items():
        alert = alerts.get(fp)
        if alert is None or alert.state == RESOLVED:  # a resolved alert that holds again starts anew
            alert = Alert(fp, rule.name, labels, {}, PENDING, value, now, rule_id=rule.pk)
        alert.value, alert.labels, alert.keep_firing_since, alert.rule_id = value, labels, None, rule.pk
        alert.annotations = {key: expand(text, labels, value) for key, text in rule.annotations.items()}
        if alert.state == PENDING and now - alert.active_at >= rule.for_seconds:
            alert.state, alert.fired_at = FIRING, now
        after[fp] = alert
    for fp, alert in alerts.items():
        if fp in holding or alert.state == PENDING:
            continue
        if alert.state == FIRING:
            rule = rules_by_id.get(alert.rule_id)
            keep = rule.keep_firing_for_seconds if rule is not None else 0
            if keep:
                if alert.keep_firing_since is None:
                    alert.keep_firing_since = now
                if now - alert.keep_firing_since < keep:
                    after[fp] = alert
                    continue
            alert.state, alert.resolved_at = RESOLVED, now
        if now - alert.resolved_at <= RESOLVED_RETENTION:
            after[fp] = alert
    return after


def _load():
    return {fp: Alert(**json.loads(raw)) for fp, raw in shared_state.client().hgetall(_alerts_key()).items()}


def _store(before, after):
    pipe = shared_state.client().pipeline(transaction=False)
    if after:
        pipe.hset(_alerts_key(), mapping={fp: json.dumps(asdict(alert)) for fp, alert in after.items()})
    gone = set(before) - set(after)
    if gone:
        pipe.hdel(_alerts_key(), *gone)
    pipe.execute()


def _silences(now):
    moment = datetime.datetime.fromtimestamp(now, datetime.UTC)
    return list(AlertSilence.objects.filter(starts_at__lte=moment, ends_at__gt=moment))


def _silenced_by(alerts, silences):
    """{fingerprint: [ids of the active silences that mute it]}, for the alerts some silence mutes."""
    muted = {}
    for alert in alerts:
        ids = [silence.pk for silence in silences if silence.matches(alert.labels)]
        if ids:
            muted[alert.fingerprint] = ids
    return muted


def _shown(alerts, silenced_by):
    """Pending and firing alerts as dicts: firing first, then by severity, then the oldest first."""
    shown = [alert for alert in alerts if alert.state != RESOLVED]
    shown.sort(key=lambda a: (a.state != FIRING, SEVERITY_ORDER.get(a.labels.get("severity"), 9), a.active_at,
                              a.fingerprint))
    return [alert.as_dict(silenced_by.get(alert.fingerprint, ())) for alert in shown]


def evaluate(samples, now=None):
    """Evaluate every enabled rule against this interval's samples (`telemetry.series.Sample`) at
    `now` (seconds since the epoch; the current time if None); store the alerts, queue the
    notifications that are due (sent in the background) and set the `blaze_alerts` gauge. Returns the
    pending and firing alerts (`Alert.as_dict`)."""
    now = timezone.now().timestamp() if now is None else now
    rules = list(AlertRule.objects.filter(enabled=True))
    before = _load()
    after = step(rules, samples, dict(before), now)
    _store(before, after)
    silenced_by = _silenced_by(after.values(), _silences(now))
    notify.dispatch(list(after.values()), set(silenced_by), now)
    alerts = _shown(after.values(), silenced_by)
    alert_metrics.count(alerts, rules)
    return alerts


def active_alerts(now=None):
    """The pending and firing alerts as the last evaluation left them (suppressed ones included), as
    `evaluate` returns them. Raises redis.RedisError when Redis does not answer."""
    now = timezone.now().timestamp() if now is None else now
    alerts = list(_load().values())
    return _shown(alerts, _silenced_by(alerts, _silences(now)))
