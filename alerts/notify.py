"""Notifications to the receivers, in Alertmanager's webhook JSON (version "4"), with its semantics.

`dispatch(alerts, silenced, now)` runs in each evaluation: per enabled receiver it groups the firing
and resolved alerts (silenced ones left out) by the receiver's `group_by` labels, and decides from the
notification log (in Redis, per receiver and group: the fingerprints last notified as firing and as
resolved, and when) whether the group is due, as Alertmanager's dedup stage does: a new firing alert,
all of them resolved, a newly resolved one (when `send_resolved`), or `repeat_interval` gone by. The
log is written when the notice is queued, so no notice goes twice; a notice that fails every attempt
puts the log back, and the group is tried again FAILED_RETRY_SECONDS later.

Delivery is off the evaluation path: each receiver has one thread of its own (its notices go in
order, and a receiver that hangs delays only its own), posting with httpx and retrying with
tenacity on what `core.retry.is_retriable` retries (5xx, timeouts, connection
errors; never a 4xx) under the BLAZE_RETRY_* settings. Each delivery's outcome is kept in Redis per
receiver (`delivery_status`) for the pages and the API.
"""

import datetime
import json
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass

import httpx
import redis
from django.conf import settings
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from alerts.models import AlertReceiver
from core import shared_state
from core.retry import UpstreamError, UpstreamTimeout, UpstreamUnreachable, is_retriable

log = logging.getLogger(__name__)

FIRING, RESOLVED = "firing", "resolved"
FAILED_RETRY_SECONDS = 60  # as Alertmanager tries a failed group again at its next group interval
LOG_RETENTION = 5 * 24 * 3600  # Alertmanager keeps its notification log 120 h
DEFAULT_EXTERNAL_URL = "http://127.0.0.1:8000"
USER_AGENT = "Blaze-Alerting"


def external_url():
    """Where Blaze's pages are, as receivers should link to them (settings.BLAZE_EXTERNAL_URL)."""
    return (getattr(settings, "BLAZE_EXTERNAL_URL", "") or DEFAULT_EXTERNAL_URL).rstrip("/")


def _log_key(receiver_id):
    return shared_state.key("alerts", "notified", receiver_id)


def _delivery_key(receiver_id):
    return shared_state.key("alerts", "delivery", receiver_id)


def label_text(labels):
    """A label set as Alertmanager prints it: {alertname="route-down", route="chat"}."""
    return "{" + ", ".join(f"{name}={json.dumps(labels[name], ensure_ascii=False)}" for name in sorted(labels)) + "}"


def group_key(receiver, group_labels):
    """Alertmanager's groupKey: the route (here, the receiver) and the group's labels."""
    return f'{{}}/{{receiver={json.dumps(receiver.name, ensure_ascii=False)}}}:{label_text(group_labels)}'


def group_labels(labels, group_by):
    if "..." in group_by:
        return dict(labels)
    return {name: labels[name] for name in group_by if name in labels}


def _common(maps):
    first, *rest = maps
    return {key: value for key, value in first.items() if all(other.get(key) == value for other in rest)}


def webhook_payload(receiver, key, labels, alerts):
    """The JSON Alertmanager's webhook receiver posts (version "4") for one group's alerts."""
    alerts = sorted(alerts, key=lambda alert: (alert.state != FIRING, label_text(alert.labels)))
    return {
        "version": "4",
        "groupKey": key,
        "truncatedAlerts": 0,
        "status": FIRING if any(alert.state == FIRING for alert in alerts) else RESOLVED,
        "receiver": receiver.name,
        "groupLabels": labels,
        "commonLabels": _common([alert.labels for alert in alerts]),
        "commonAnnotations": _common([alert.annotations for alert in alerts]),
        "externalURL": external_url(),
        "alerts": [
            {"status": alert.state, "labels": alert.labels, "annotations": alert.annotations,
             "startsAt": alert.starts_at, "endsAt": alert.ends_at, "generatorURL": alert.generator_url,
             "fingerprint": alert.fingerprint}
            for alert in alerts
        ],
    }


def _due(entry, firing, newly_resolved, receiver, now):
    """Whether a group needs a notice now (Alertmanager's DedupStage.needsUpdate): `entry` is its
    notification log entry (None before the first), `firing` and `newly_resolved` sets of fingerprints."""
    if entry is None:
        return bool(firing)
    if entry.get("retry_at", 0) > now:
        return False
    if not firing <= set(entry["firing"]):
        return True
    if not firing:  # all resolved: clear the log even without send_resolved (nothing is posted then)
        return bool(entry["firing"])
    if receiver.send_resolved and newly_resolved:
        return True
    return now - entry["at"] >= receiver.repeat_interval_seconds


@dataclass(frozen=True)
class Notice:
    """One webhook post to make, and the notification log entry it replaced (put back if it fails)."""

    id: str
    receiver_id: int
    url: str
    timeout: float
    group: str
    payload: dict
    previous: dict | None
    made_at: float


def dispatch(alerts, silenced, now):
    """Queue the notices due at `now` for `alerts` (`alerting.Alert`; only firing and resolved ones are
    sent), leaving out the fingerprints in `silenced`. Returns the notices queued; never waits on a
    receiver."""
    sendable = [alert for alert in alerts if alert.state in (FIRING, RESOLVED) and alert.fingerprint not in silenced]
    notices = []
    for receiver in AlertReceiver.objects.filter(enabled=True):
        notices += _dispatch_to(receiver, sendable, now)
    for notice in notices:
        _submit(notice)
    return notices


def _dispatch_to(receiver, alerts, now):
    groups = {}
    for alert in alerts:
        labels = group_labels(alert.labels, receiver.group_by)
        groups.setdefault(group_key(receiver, labels), (labels, []))[1].append(alert)
    key = _log_key(receiver.pk)
    client = shared_state.client()
    entries = {group: json.loads(raw) for group, raw in client.hgetall(key).items()}
    writes, notices = {}, []
    for group, (labels, members) in groups.items():
        entry = entries.get(group)
        firing = {alert.fingerprint for alert in members if alert.state == FIRING}
        resolved = {alert.fingerprint for alert in members if alert.state == RESOLVED}
        newly_resolved = resolved - set(entry["resolved"] if entry else ())
        if not _due(entry, firing, newly_resolved, receiver, now):
            continue
        notice_id = uuid.uuid4().hex
        writes[group] = json.dumps({"firing": sorted(firing), "resolved": sorted(resolved), "at": now,
                                    "notice": notice_id})
        sent = [alert for alert in members
                if alert.state == FIRING or (receiver.send_resolved and alert.fingerprint in newly_resolved)]
        if sent:
            notices.append(Notice(notice_id, receiver.pk, receiver.url, receiver.timeout_seconds, group,
                                  webhook_payload(receiver, group, labels, sent), entry, now))
    stale = [group for group, entry in entries.items()
             if group not in groups and (not entry["firing"] or now - entry["at"] > LOG_RETENTION)]
    pipe = client.pipeline(transaction=False)
    if writes:
        pipe.hset(key, mapping=writes)
    if stale:
        pipe.hdel(key, *stale)
    pipe.execute()
    return notices


_lock = threading.Lock()
_executors = {}  # receiver id → its one delivery thread
_in_flight = set()


def _submit(notice):
    with _lock:
        executor = _executors.get(notice.receiver_id)
        if executor is None:
            executor = _executors[notice.receiver_id] = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix=f"alert-receiver-{notice.receiver_id}")
        future = executor.submit(_deliver, notice)
        _in_flight.add(future)
    future.add_done_callback(_landed)


def _landed(future):
    with _lock:
        _in_flight.discard(future)


def drain(timeout=None):
    """Wait for the notices queued so far to be delivered or given up (a producer that stops, tests).
    True when none is left."""
    with _lock:
        futures = list(_in_flight)
    return not wait(futures, timeout).not_done


class ReceiverRefused(Exception):
    """The receiver answered with a status that is not a success and not worth another try (4xx, 3xx)."""

    def __init__(self, status, body=""):
        self.status, self.body = status, body[:2000]
        super().__init__(f"HTTP {status}")


def _post(notice):
    try:
        response = httpx.post(notice.url, json=notice.payload, timeout=notice.timeout,
                              headers={"User-Agent": USER_AGENT})
    except httpx.TimeoutException as exc:
        raise UpstreamTimeout(f"No answer within {notice.timeout:g} s ({type(exc).__name__}).") from exc
    except httpx.TransportError as exc:
        raise UpstreamUnreachable(f"Could not reach the receiver ({type(exc).__name__}: {exc}).") from exc
    if response.status_code >= 500:
        raise UpstreamError(response.status_code, response.text)
    if not 200 <= response.status_code < 300:
        raise ReceiverRefused(response.status_code, response.text)
    return response.status_code


def _retrying():
    return Retrying(
        retry=retry_if_exception(is_retriable),
        stop=stop_after_attempt(settings.BLAZE_RETRY_ATTEMPTS),
        wait=wait_random_exponential(multiplier=settings.BLAZE_RETRY_BASE_SECONDS,
                                     max=settings.BLAZE_RETRY_MAX_DELAY_SECONDS),
        reraise=True,
    )


def _error_text(exc):
    status = getattr(exc, "status", None)
    if status is None:
        return str(exc)
    body = " ".join(getattr(exc, "body", "").split())[:200]
    return f"HTTP {status}" + (f": {body}" if body else "")


def _deliver(notice):
    attempts = 0
    try:
        for attempt in _retrying():
            with attempt:
                attempts += 1
                status = _post(notice)
    except Exception as exc:  # noqa: BLE001 - a failed delivery is recorded for the pages, not raised in a pool
        log.warning("alert notice to receiver %s failed after %d attempt(s): %s", notice.receiver_id, attempts,
                    _error_text(exc))
        _record(notice, attempts, getattr(exc, "status", None), _error_text(exc))
        _put_back(notice)
    else:
        _record(notice, attempts, status, "")


def _record(notice, attempts, status, error):
    now = time.time()
    fields = {"last_attempt_at": now, "attempts": attempts, "last_status": status or "", "last_group": notice.group}
    fields.update({"last_error": error, "last_error_at": now} if error else {"last_success_at": now})
    key = _delivery_key(notice.receiver_id)
    try:
        pipe = shared_state.client().pipeline(transaction=False)
        pipe.hset(key, mapping=fields)
        pipe.hincrby(key, "failed" if error else "delivered", 1)
        pipe.execute()
    except redis.RedisError as exc:
        log.warning("could not record the delivery to receiver %s: %s", notice.receiver_id, exc)


def _put_back(notice):
    """The group's log entry as it was before the failed notice, to be tried again later; unless a
    newer notice has replaced the entry meanwhile."""
    key = _log_key(notice.receiver_id)
    entry = {**(notice.previous or {"firing": [], "resolved": [], "at": 0}),
             "retry_at": notice.made_at + FAILED_RETRY_SECONDS}
    entry.pop("notice", None)

    def put(pipe):
        current = pipe.hget(key, notice.group)
        if current is not None and json.loads(current).get("notice") == notice.id:
            pipe.multi()
            pipe.hset(key, notice.group, json.dumps(entry))

    try:
        shared_state.client().transaction(put, key)
    except redis.RedisError as exc:
        log.warning("could not put back the notification log of receiver %s: %s", notice.receiver_id, exc)


def _moment(raw):
    return datetime.datetime.fromtimestamp(float(raw), datetime.UTC) if raw else None


def delivery_status(receiver_id):
    """The receiver's last delivery: {last_attempt_at, last_success_at, last_error_at (datetimes or
    None), last_error, last_status (the HTTP status, None without one), attempts (of the last
    delivery), delivered, failed (counts), failing (the last delivery failed)}. None when Redis does
    not answer."""
    try:
        raw = shared_state.client().hgetall(_delivery_key(receiver_id))
    except redis.RedisError as exc:
        log.warning("delivery status unavailable: %s", exc)
        return None
    last_success, last_error = float(raw.get("last_success_at", 0)), float(raw.get("last_error_at", 0))
    return {
        "last_attempt_at": _moment(raw.get("last_attempt_at")), "last_success_at": _moment(raw.get("last_success_at")),
        "last_error_at": _moment(raw.get("last_error_at")), "last_error": raw.get("last_error", ""),
        "last_status": int(raw["last_status"]) if raw.get("last_status") else None,
        "attempts": int(raw.get("attempts", 0)), "delivered": int(raw.get("delivered", 0)),
        "failed": int(raw.get("failed", 0)), "failing": last_error > last_success,
    }


def forget_receiver(receiver_id):
    """Drop a deleted receiver's notification log and delivery status."""
    shared_state.client().delete(_log_key(receiver_id), _delivery_key(receiver_id))
