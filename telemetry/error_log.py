"""Recent error responses, kept in Redis (the last KEEP) for /errors/summary."""

import json
import logging
import time
from collections import Counter

import redis
from django.core.signals import got_request_exception
from django.dispatch import receiver

from core import shared_state

KEEP = 1000
log = logging.getLogger(__name__)


@receiver(got_request_exception)
def _note_exception(sender, request=None, **kwargs):
    import sys

    exc = sys.exc_info()[1]
    if request is not None and exc is not None:
        request.error_type = type(exc).__name__


def error_type(request, response):
    """An exception's class when one escaped, else the error `type`/`code` the body names, else the status."""
    if getattr(request, "error_type", None):
        return request.error_type
    if response.get("Content-Type", "").startswith("application/json") and not getattr(response, "streaming", False):
        try:
            body = json.loads(response.content)
        except ValueError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict) and (error.get("code") or error.get("type")):
            return str(error.get("code") or error.get("type"))
    return f"http_{response.status_code}"


def remember(request, response, endpoint):
    entry = {
        "time": time.time(), "status": response.status_code, "endpoint": endpoint, "method": request.method,
        "type": error_type(request, response), "request_id": getattr(request, "request_id", ""),
    }
    try:
        pipe = shared_state.client().pipeline()
        pipe.lpush(shared_state.key("errors"), json.dumps(entry))
        pipe.ltrim(shared_state.key("errors"), 0, KEEP - 1)
        pipe.execute()
    except redis.RedisError as exc:  # an outage must not turn an answer into a 500
        log.warning("could not remember an error response: %s", exc)


def summary(since_seconds=3600):
    """Errors of the last `since_seconds`, grouped by (type, endpoint), most frequent first."""
    cutoff = time.time() - since_seconds
    entries = [json.loads(raw) for raw in shared_state.client().lrange(shared_state.key("errors"), 0, -1)]
    entries = [entry for entry in entries if entry["time"] >= cutoff]
    groups = Counter((entry["type"], entry["endpoint"], entry["status"]) for entry in entries)
    last_seen = {}
    for entry in entries:  # newest first
        last_seen.setdefault((entry["type"], entry["endpoint"], entry["status"]), entry)
    return {
        "since_seconds": since_seconds,
        "total": len(entries),
        "groups": [
            {
                "type": kind, "endpoint": endpoint, "status": status, "count": count,
                "last_seen": last_seen[(kind, endpoint, status)]["time"],
                "last_request_id": last_seen[(kind, endpoint, status)]["request_id"],
            }
            for (kind, endpoint, status), count in groups.most_common()
        ],
    }
