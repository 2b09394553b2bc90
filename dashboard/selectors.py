"""Reads for the monitoring endpoints: dependency checks and a JSON view of the metrics."""

import shutil
import time
from datetime import timedelta
from urllib.parse import urlencode

from django.conf import settings
from django.db import connection
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest

from core import shared_state
from engines import heartbeats
from engines.models import Engine
from telemetry import cluster


def registry(summed=True):
    """Every live process's metrics, web and workers on every host (`telemetry.cluster`): added up
    over the processes, or (`summed=False`) each series with its `host` and `process` labels."""
    collected = CollectorRegistry(auto_describe=False)
    collected.register(cluster.ClusterCollector(summed=summed))
    return collected


def prometheus_text():
    return generate_latest(registry(summed=False))


def _check(probe):
    started = time.perf_counter()
    try:
        detail = probe()
    except Exception as exc:  # noqa: BLE001 - a dependency check reports failures, it does not raise them
        return {"status": "down", "error": f"{type(exc).__name__}: {exc}",
                "latency_ms": round((time.perf_counter() - started) * 1000, 2)}
    return {"status": "up", "latency_ms": round((time.perf_counter() - started) * 1000, 2), **(detail or {})}


def _database():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return {"vendor": connection.vendor}


def _redis():
    client = shared_state.new_client(socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
    finally:
        client.close()


def _disk():
    usage = shutil.disk_usage(settings.VAR_DIR)
    low = usage.free < settings.BLAZE_MIN_FREE_DISK_BYTES
    return {"status": "low" if low else "up", "path": str(settings.VAR_DIR), "free_bytes": usage.free,
            "total_bytes": usage.total}


def health_report():
    """Database and Redis are required (down → `down`, HTTP 503); no live worker or low disk only
    degrade: the control plane still works without them."""
    database, cache = _check(_database), _check(_redis)
    disk = _check(_disk)
    workers, engines = [], []
    if cache["status"] == "up":
        workers = [
            {"id": w["id"], "device": w["device"], "lost": w["lost"], "in_flight": w["in_flight"],
             "heartbeat_age_seconds": round(time.time() - w["last_seen"], 2),
             "models": [e["engine"] for e in w["cache"]]}
            for w in heartbeats.live_workers()
        ]
    if database["status"] == "up":
        engines = list(Engine.objects.order_by("name").values("name", "kind", "enabled", "status", "status_detail"))
    if "down" in (database["status"], cache["status"]):
        status = "down"
    elif not any(not w["lost"] for w in workers) or disk["status"] != "up":
        status = "degraded"
    else:
        status = "ok"
    return {
        "status": status,
        "checks": {"database": database, "redis": cache, "disk": disk},
        "workers": workers,
        "engines": engines,
    }


def _quantile(buckets, count, q):
    """Upper bound of the histogram bucket holding the q-quantile (buckets: sorted (le, cumulative))."""
    if not count:
        return None
    for bound, cumulative in buckets:
        if cumulative >= q * count:
            return bound if bound != float("inf") else None  # beyond the largest bucket: unknown
    return None


def metrics_snapshot():
    """The metrics as JSON for the dashboard: per-route traffic, per-engine inference, per-worker cache."""
    http, engines, workers, counters = {}, {}, {}, {}
    histograms = {}
    for family in registry().collect():
        for sample in family.samples:
            labels, name = sample.labels, sample.name
            if name == "blaze_http_requests_total":
                route = http.setdefault(labels["endpoint"], {"requests": 0, "errors": 0, "by_status": {}})
                route["requests"] += sample.value
                route["by_status"][labels["status"]] = route["by_status"].get(labels["status"], 0) + sample.value
                if int(labels["status"]) >= 500:
                    route["errors"] += sample.value
            elif name.endswith("_bucket") or name.endswith("_count") or name.endswith("_sum"):
                base, part = name.rsplit("_", 1)
                # Methods merge: the dashboard charts a route, whatever the verb.
                key = (base, tuple(sorted((k, v) for k, v in labels.items() if k not in ("le", "method"))))
                entry = histograms.setdefault(key, {"buckets": {}, "count": 0, "sum": 0.0})
                if part == "bucket":
                    bound = float(labels["le"])
                    entry["buckets"][bound] = entry["buckets"].get(bound, 0) + sample.value
                else:
                    entry[part] += sample.value
            elif name == "blaze_model_cache_events_total":
                workers.setdefault(labels["worker"], {}).setdefault("events", {})[labels["event"]] = sample.value
            elif name == "blaze_model_cache_bytes":
                workers.setdefault(labels["worker"], {})["bytes"] = sample.value
            elif name in ("blaze_tokens_generated_total", "blaze_queue_depth", "blaze_tokens_per_second"):
                engines.setdefault(labels["engine"], {})[name.removeprefix("blaze_").removesuffix("_total")] = (
                    sample.value
                )
            elif name in ("blaze_rate_limit_rejections_total", "blaze_security_events_total"):
                counters[name.removeprefix("blaze_").removesuffix("_total")] = (
                    counters.get(name.removeprefix("blaze_").removesuffix("_total"), 0) + sample.value
                )
    for (base, labels), entry in histograms.items():
        labels = dict(labels)
        buckets = sorted(entry["buckets"].items())
        stats = {
            "count": entry["count"], "mean": entry["sum"] / entry["count"] if entry["count"] else None,
            "p50": _quantile(buckets, entry["count"], 0.5), "p95": _quantile(buckets, entry["count"], 0.95),
        }
        if base == "blaze_http_request_duration_seconds":
            http.setdefault(labels["endpoint"],
                            {"requests": 0, "errors": 0, "by_status": {}})["latency_seconds"] = stats
        elif "engine" in labels:
            field = {"blaze_inference_duration_seconds": "batch_seconds", "blaze_batch_size": "batch_size",
                     "blaze_time_to_first_token_seconds": "time_to_first_token_seconds"}.get(base)
            if field:
                engines.setdefault(labels["engine"], {})[field] = stats
    return {"time": time.time(), "http": http, "engines": engines, "workers": workers, "counters": counters}


CONFIG_ACTIONS = ("engine.", "route.", "cache.", "ratelimit.", "alert_rule.", "alert_receiver.", "alert_silence.")


def config_events(seconds, limit=200):
    """Audit events that changed the configuration in the last `seconds` (engines, routes, caches, rate
    limits, alert rules), newest last: the markers on the charts' time axis, each linking to the log."""
    from accounts.models import AuditEvent

    since = timezone.now() - timedelta(seconds=seconds)
    prefixes = Q()
    for prefix in CONFIG_ACTIONS:
        prefixes |= Q(action__startswith=prefix)
    events = AuditEvent.objects.filter(prefixes, time__gte=since).order_by("-time")[:limit]
    return [
        {"t": event.time.timestamp(), "action": event.action, "target": event.target, "actor": event.actor,
         "url": f"{reverse('audit')}?{urlencode({'action': event.action, 'target': event.target})}"}
        for event in reversed(events)
    ]
