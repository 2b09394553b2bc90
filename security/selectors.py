from datetime import timedelta

from django.db.models import Count
from django.utils import timezone

from accounts.selectors import audit_events

from .models import IpBlock

COUNT_WINDOW = timedelta(hours=24)


def active_blocks():
    return IpBlock.objects.active().select_related("created_by")


def security_events():
    """Security events (detections, blocks, unblocks) from the audit log, newest first."""
    return audit_events(action="security")


def security_status(*, recent=50):
    """What /security/status shows: the active blocks, the latest `recent` security events, and the
    events of the last 24 hours counted by kind (`sql_injection`, `ip_blocked`, …)."""
    since = timezone.now() - COUNT_WINDOW
    counts = security_events().filter(time__gte=since).values("action").annotate(n=Count("id")).order_by()
    return {
        "blocks": list(active_blocks()),
        "events": list(security_events()[:recent]),
        "counts": {row["action"].removeprefix("security."): row["n"] for row in counts},
        "counts_since": since,
    }
