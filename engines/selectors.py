import redis
from django.db.models import Count, Prefetch, Q

from accounts.models import AuditEvent
from engines import downloads
from engines.heartbeats import live_workers
from engines.models import Adapter, Engine, Route, RouteFallback


def engine_list(*, kind="", enabled=None, search=""):
    engines = Engine.objects.all()
    if kind:
        engines = engines.filter(kind=kind)
    if enabled is not None:
        engines = engines.filter(enabled=enabled)
    if search:
        engines = engines.filter(name__icontains=search)
    return engines


def adapter_list(*, engine=None, served=False):
    """Adapters, with their base engines; of one engine, or only those a client may ask for now
    (`served`: the adapter and its base enabled)."""
    adapters = Adapter.objects.select_related("engine")
    if engine is not None:
        adapters = adapters.filter(engine=engine)
    if served:
        adapters = adapters.filter(enabled=True, engine__enabled=True)
    return adapters


def engine_history(engine, limit=20):
    return AuditEvent.objects.filter(target_type="engines.engine", target_id=str(engine.pk))[:limit]


def route_list():
    return Route.objects.annotate(
        target_count=Count("targets"), enabled_target_count=Count("targets", filter=Q(targets__enabled=True)),
    ).prefetch_related(Prefetch("fallbacks", queryset=RouteFallback.objects.select_related("route_fallback",
                                                                                         "engine_fallback")))


def route_history(route, limit=20):
    return AuditEvent.objects.filter(target_type="engines.route", target_id=str(route.pk))[:limit]


def _resilience_states(targets):
    """{target pk: {"breaker": state, "health": state}} as the router sees them, two round trips in all."""
    from engines.serving.resilience import breaker, health  # imported here: resilience is built on the engines app
    from engines.serving.router import resilience_id_of

    names = {target.pk: resilience_id_of(target) for target in targets}
    healths = health.states(names.values())
    breakers = breaker.states(map(breaker.CircuitBreaker, set(names.values())))
    return {pk: {"breaker": breakers[name], "health": healths[name]} for pk, name in names.items()}


def _live_rows(route, targets):
    from engines.serving.router import state, survey

    found, reasons = survey(route)
    found = {candidate.id: candidate for candidate in found}
    stats, resilience = state.target_stats(route), _resilience_states(targets)
    return {
        target.pk: {
            "available": target.pk in found,
            "reason": "" if target.pk in found else reasons.get(str(target), "route disabled"),
            "cached_on": list(found[target.pk].cached_on) if target.pk in found else [],
            **stats[target.pk], **resilience[target.pk],
        }
        for target in targets
    }


def route_status(route):
    """The route's targets as the status API and the live table show them: each target, whether it
    may take a request now (else why not), the workers holding its model, its live numbers (in
    flight, share, error rate, latency average, p50/p95), its breaker and health states. When Redis
    does not answer, the targets come without live numbers and `error` says so."""
    targets = list(route.targets.select_related("engine"))
    try:
        live, error = _live_rows(route, targets), ""
    except redis.RedisError:
        live, error = {}, "Redis does not answer: the live state is unavailable."
    rows = [
        {"id": target.pk, "engine": target.engine.name, "backend": target.engine.backend, "worker": target.worker,
         "weight": target.weight, "enabled": target.enabled, **live.get(target.pk, {})}
        for target in targets
    ]
    status = {"route": route.name, "strategy": route.strategy, "enabled": route.enabled, "targets": rows}
    return {**status, "error": error} if error else status


def download_list():
    """The model downloads asked for, newest first (engines/downloads.py), as the API and the Models page
    show them: each record with `cancelling` (cancel asked, its worker yet to stop it) and `worker_lost`
    (queued or running on a worker with no recent heartbeat: it goes on when that worker is back)."""
    live = {worker["id"] for worker in live_workers() if not worker["lost"]}
    return [_download_row(record, live) for record in downloads.records()]


def download_get(download_id):
    """One download as `download_list` shows it, or None."""
    record = downloads.get(download_id)
    if record is None:
        return None
    return _download_row(record, {worker["id"] for worker in live_workers() if not worker["lost"]})


def _download_row(record, live):
    active = record["state"] in downloads.ACTIVE
    return {**record, "cancelling": active and downloads.cancel_requested(record["id"]),
            "worker_lost": active and record["worker"] not in live}
