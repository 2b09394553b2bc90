"""Writes to the engine registry, the routes, the workers' model caches and their model downloads. Each
records one audit
event (deleting an engine also one per route target that goes with it). Engine input was validated by
the serializer before; route changes are checked here by the models' rules (`full_clean`), so the API,
the pages and the shell all get them."""

import logging
import re
import time
import uuid
from functools import partial

import redis
from django.conf import settings
from django.core.files.base import ContentFile
from django.db import transaction
from django.urls import reverse

from accounts import audit
from core import errors, shared_state
from core.errors import InvalidInput
from engines import contract, downloads
from engines.celery_app import CONTROL, app
from engines.heartbeats import holding, worker_info
from engines.models import Adapter, Engine, GeneratedImage, Route, RouteFallback, RouteTarget
from engines.serving.router import state as router_state

log = logging.getLogger(__name__)

# The models' rules as InvalidInput; clean() names a duplicate, the unique constraint backs it.
_checked = partial(errors.checked, validate_constraints=False)


@transaction.atomic
def engine_create(*, actor, **fields):
    engine = Engine.objects.create(created_by=actor.user, **fields)
    audit.record(actor=actor, action="engine.create", target=engine, changes=audit.diff({}, engine.audit_fields()))
    return engine


@transaction.atomic
def engine_update(*, actor, engine, **fields):
    before = engine.audit_fields()
    for name, value in fields.items():
        setattr(engine, name, value)
    engine.save()
    changes = audit.diff(before, engine.audit_fields())
    if changes:
        audit.record(actor=actor, action="engine.update", target=engine, changes=changes)
    return engine


@transaction.atomic
def engine_set_enabled(*, actor, engine, enabled):
    if engine.enabled == enabled:
        return engine
    engine.enabled = enabled
    engine.save(update_fields=["enabled", "updated_at"])
    if not enabled:
        transaction.on_commit(lambda: unload_everywhere(engine.name))
    audit.record(
        actor=actor, action="engine.enable" if enabled else "engine.disable", target=engine,
        changes={"enabled": [not enabled, enabled]},
    )
    return engine


@transaction.atomic
def engine_delete(*, actor, engine):
    audit.record(actor=actor, action="engine.delete", target=engine, changes=audit.diff(engine.audit_fields(), {}))
    for target in engine.route_targets.select_related("route"):  # deleted with the engine: say so on each route
        _record_target(actor, "route.target_remove", target, audit.diff(target.audit_fields(), {}),
                       reason="engine deleted")
    _record_fallback_gone(actor, RouteFallback.objects.filter(engine_fallback=engine), reason="engine deleted")
    _forget_on_commit(router_state.forget_targets, list(engine.route_targets.values_list("pk", flat=True)))
    name = engine.name
    engine.delete()
    _forget_on_commit(_forget_engine_health, name)
    transaction.on_commit(lambda: unload_everywhere(name))


def _forget_engine_health(name):
    """A deleted engine's outcomes no longer move adaptive rate limits (ratelimits/algorithms.py)."""
    shared_state.client().srem(shared_state.engines_with_stats_key(), name)


class WorkerUnavailable(errors.Unavailable):
    """The worker is lost or did not answer in time."""


def _worker_call(task_name, worker_id, *args, timeout=600):
    from celery.exceptions import TimeoutError as CeleryTimeout

    info = worker_info(worker_id)
    if info is None or info["lost"]:
        raise WorkerUnavailable(f"Worker {worker_id} is not running (no recent heartbeat).")
    try:
        return app.send_task(task_name, args=args, queue=contract.worker_queue(worker_id)).get(timeout=timeout)
    except CeleryTimeout as exc:
        raise WorkerUnavailable(f"Worker {worker_id} did not answer within {timeout} s.") from exc


def cache_load(*, actor, worker_id, engine):
    """Load (warm) an engine's model on a worker; raises the worker's load error when it fails."""
    entry = _worker_call(contract.CACHE_LOAD_TASK, worker_id, contract.EngineSpec.from_engine(engine).as_dict())
    audit.record(actor=actor, action="cache.load", target=engine,
                 data={"worker": worker_id, "bytes": entry["bytes"], "estimated_bytes": entry["estimated_bytes"]})
    return entry


def cache_unload(*, actor, worker_id, engine_name):
    unloaded = _worker_call(contract.CACHE_UNLOAD_TASK, worker_id, engine_name, timeout=120)
    if unloaded:
        audit.record(actor=actor, action="cache.unload", target_repr=engine_name, data={"worker": worker_id})
    return unloaded


def cache_evict(*, actor, worker_id):
    """Evict the worker's least recently used model; returns its engine name or None."""
    victim = _worker_call(contract.CACHE_EVICT_TASK, worker_id, timeout=120)
    if victim:
        audit.record(actor=actor, action="cache.evict", target_repr=victim, data={"worker": worker_id})
    return victim


def engine_unload_everywhere(*, actor, engine):
    """Ask every worker to drop the engine's model now (the next request loads it again); returns the
    ids of the live workers that held it."""
    held_by = [worker_id for worker_id, _ in holding(engine.name)]
    unload_everywhere(engine.name)
    audit.record(actor=actor, action="cache.unload_everywhere", target=engine, data={"workers": held_by})
    return held_by


def unload_everywhere(engine_name):
    """Ask every worker to drop an engine (after disable or delete); a broker outage is logged, not fatal."""
    try:
        # Declaring the queue tells this process the exchange fans out; undeclared, the Redis
        # transport would treat it as direct and the message would reach no worker.
        app.send_task(contract.UNLOAD_EVERYWHERE_TASK, args=[engine_name], queue=CONTROL, declare=[CONTROL],
                      ignore_result=True)
    except Exception:
        log.exception("could not broadcast unload of %s", engine_name)


# A branch, tag or commit: what the hub takes in a URL's revision segment (quoted).
REVISION = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*")


def download_start(*, actor, repo, revision="main", worker_id):
    """Ask a live worker to fetch a model from its Hugging Face hub (its HF_ENDPOINT) into its models
    directory, as BLAZE_MODELS_DIR/<name>; returns the download's record, queued (engines/downloads.py).
    Raises InvalidInput naming `repo`, `revision` or `worker`, among them a model the worker is already
    fetching into the same folder."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id  # here: the web side needs it only here

    try:
        validate_repo_id(repo)
    except HFValidationError as exc:
        raise InvalidInput(f"{repo!r} is not a repository id: write it as the hub does, org/name (letters, digits, "
                           "'-', '_' and '.').", field="repo") from exc
    if len(revision) > 200 or ".." in revision or not REVISION.fullmatch(revision):
        raise InvalidInput(f"{revision!r} is not a branch, tag or commit.", field="revision")
    info = worker_info(worker_id)
    if info is None or info["lost"]:
        raise InvalidInput(f"No live worker {worker_id}: choose one that is running (the Workers page lists them).",
                           field="worker")
    name = repo.rsplit("/", 1)[-1]
    for other in downloads.records():
        if (other["worker"] == worker_id and other["state"] in downloads.ACTIVE
                and other["repo"].rsplit("/", 1)[-1] == name):
            raise InvalidInput(f"Worker {worker_id} is already downloading {other['repo']}@{other['revision']} into "
                               f"the folder {name}; wait for it, or cancel it.", field="repo")
    record = downloads.new(repo=repo, revision=revision, worker=worker_id, requested_by=actor.describe())
    downloads.create(record)
    try:
        app.send_task(contract.DOWNLOAD_MODEL_TASK, args=[record["id"]], queue=contract.worker_queue(worker_id),
                      ignore_result=True)
    except Exception:
        downloads.forget(record["id"])
        raise
    audit.record(actor=actor, action="model.download", target_repr=f"{repo}@{revision}",
                 data={"worker": worker_id, "download": record["id"]})
    return record


def download_cancel(*, actor, download_id):
    """Cancel a queued or running download: its worker stops it at its next chunk and deletes what it
    fetched (a download whose worker is gone is marked cancelled here). Returns its record; raises
    NotFound, or InvalidInput for a download already over."""
    record = downloads.get(download_id)
    if record is None:
        raise errors.NotFound(f"No download {download_id}.")
    if record["state"] not in downloads.ACTIVE:
        raise InvalidInput(f"The download of {record['repo']} is already {record['state']}: nothing to cancel.")
    downloads.request_cancel(download_id)
    info = worker_info(record["worker"])
    if info is None or info["lost"]:  # no worker to stop it: it would never end
        record.update(state="cancelled", finished_at=time.time(), rate=0.0, eta=None)
        downloads.save(record)
    audit.record(actor=actor, action="model.download_cancel", target_repr=f"{record['repo']}@{record['revision']}",
                 data={"worker": record["worker"], "download": download_id})
    return record

@transaction.atomic
def store_images(*, user, engine_name, payload, seed, pngs):
    """Save each generated PNG (MEDIA_ROOT) with a row; returns the URL path of each. All or none: a
    store that cannot take them (a full disk) raises StorageFull and keeps neither files nor rows."""
    params = {k: v for k, v in payload.items() if k not in ("image", "prompt")}
    images = []
    try:
        for index, png in enumerate(pngs):
            image = GeneratedImage(user=user, engine=engine_name, prompt=payload["prompt"], params=params,
                                   seed=seed + index)
            name = f"{uuid.uuid4().hex}.png"
            writing = image.file.field.generate_filename(image, name)
            image.file.save(name, ContentFile(png), save=True)
            images.append(image)
    except OSError as exc:
        image.file.storage.delete(writing)  # the storage leaves the part of it that the disk took
        for image in images:
            image.file.delete(save=False)
        raise errors.StorageFull(f"The image store cannot keep the pictures ({exc.strerror or exc}): free space "
                                 f"under {settings.MEDIA_ROOT}.") from exc
    return [reverse("engines:image", args=[image.pk]) for image in images]


def _forget_on_commit(forget, *args):
    """Drop the router's Redis state of what was deleted, once committed; stale counters of a gone
    target harm nothing, so a Redis outage here is logged, not an error."""

    def run():
        try:
            forget(*args)
        except redis.RedisError:
            log.warning("could not drop the Redis state of what was deleted: %s", args)

    transaction.on_commit(run)


@transaction.atomic
def route_create(*, actor, name, strategy=Route.Strategy.ROUND_ROBIN, fallbacks=(), **fields):
    route = _checked(Route(name=name, strategy=strategy, **fields))
    route.save()
    _set_fallbacks(route, fallbacks)
    audit.record(actor=actor, action="route.create", target=route, changes=audit.diff({}, route.audit_fields()))
    return route


@transaction.atomic
def route_update(*, actor, route, fallbacks=None, **fields):
    """Change a route's settings; `fallbacks`, when given, replaces its fallbacks (names, in order)."""
    before = route.audit_fields()
    for name, value in fields.items():
        setattr(route, name, value)
    _checked(route).save()
    if fallbacks is not None:
        _set_fallbacks(route, fallbacks)
    changes = audit.diff(before, route.audit_fields())
    if changes:
        audit.record(actor=actor, action="route.update", target=route, changes=changes)
    return route


def _set_fallbacks(route, names):
    """The route's fallbacks become `names`, in order: each the route of that name, else the engine (as
    a /v1 `model` reads a name), checked by RouteFallback's rules. Raises InvalidInput naming
    `fallbacks`. Saved row by row: each save ends the cached /v1 plans (`lookups`)."""
    repeated = [name for index, name in enumerate(names) if name in names[:index]]
    if repeated:
        raise InvalidInput(f"{repeated[0]} is named twice; name each fallback once.", field="fallbacks")
    rows = []
    for position, name in enumerate(names):
        fallback_route = Route.objects.filter(name=name).first()
        engine = None if fallback_route else Engine.objects.filter(name=name).first()
        if fallback_route is None and engine is None:
            raise InvalidInput(f"No route or engine named '{name}'.", field="fallbacks")
        rows.append(_checked(RouteFallback(route=route, position=position, route_fallback=fallback_route,
                                           engine_fallback=engine)))
    route.fallbacks.all().delete()
    for row in rows:
        row.save()
    getattr(route, "_prefetched_objects_cache", {}).pop("fallbacks", None)


def _record_fallback_gone(actor, rows, *, reason):
    """Each route that falls back to what is being deleted loses that fallback with it: say so on each."""
    for gone in rows.select_related("route"):
        names = gone.route.fallback_names()
        left = [name for name in names if name != gone.name]
        audit.record(actor=actor, action="route.update", target=gone.route, data={"reason": reason},
                     changes={"fallbacks": [", ".join(names), ", ".join(left)]})


@transaction.atomic
def route_delete(*, actor, route):
    audit.record(actor=actor, action="route.delete", target=route, changes=audit.diff(route.audit_fields(), {}),
                 data={"targets": [str(target) for target in route.targets.select_related("engine")]})
    _record_fallback_gone(actor, RouteFallback.objects.filter(route_fallback=route), reason="route deleted")
    route_id, target_ids = route.pk, list(route.targets.values_list("pk", flat=True))
    route.delete()
    _forget_on_commit(router_state.forget_route, route_id, target_ids)


def _record_target(actor, action, target, changes, **data):
    audit.record(actor=actor, action=action, target=target.route, changes=changes,
                 data={"target_id": target.pk, "target": str(target), **data})


@transaction.atomic
def route_target_add(*, actor, route, engine, worker="", weight=1, enabled=True):
    target = _checked(RouteTarget(route=route, engine=engine, worker=worker, weight=weight, enabled=enabled))
    target.save()
    _record_target(actor, "route.target_add", target, audit.diff({}, target.audit_fields()))
    return target


@transaction.atomic
def route_target_update(*, actor, target, **fields):
    """Change a target's weight or enabled; its engine and worker are what it is (remove and add)."""
    changes = _part_changed(target, fields, {"weight", "enabled"},
                            "A target's engine and worker cannot change; remove it and add another.")
    if changes:
        _record_target(actor, "route.target_update", target, changes)
    return target


def _part_changed(part, fields, changeable, fixed):
    """Set `fields` on `part` (a route's target, an engine's adapter), checked by its model's rules and
    saved; only the `changeable` ones may change (else InvalidInput saying `fixed`). Returns the audit diff."""
    refused = sorted(set(fields) - changeable)
    if refused:
        raise InvalidInput(fixed, field=refused[0])
    before = part.audit_fields()
    for name, value in fields.items():
        setattr(part, name, value)
    _checked(part).save()
    return audit.diff(before, part.audit_fields())


@transaction.atomic
def route_target_remove(*, actor, target):
    _record_target(actor, "route.target_remove", target, audit.diff(target.audit_fields(), {}))
    _forget_on_commit(router_state.forget_targets, [target.pk])
    target.delete()


def route_target_reset_breaker(*, actor, target):
    """Close the target's circuit breaker and forget its counts (the operator knows the target is
    back); audited with the state it was in. Returns the breaker's state (closed)."""
    from engines.serving.resilience.breaker import CircuitBreaker
    from engines.serving.router import resilience_id_of

    breaker = CircuitBreaker(resilience_id_of(target))
    before = breaker.snapshot()["state"]
    state = breaker.reset()
    _record_target(actor, "route.breaker_reset", target, {"breaker": [before, state]})
    return state


def _record_adapter(actor, action, adapter, changes):
    """An adapter's change, on its base engine's history."""
    audit.record(actor=actor, action=action, target=adapter.engine, changes=changes, data={"adapter": adapter.name})


@transaction.atomic
def adapter_add(*, actor, engine, name, path, description="", enabled=True):
    """Register a LoRA adapter on a local LLM engine (its path checked on the workers by the serializer);
    clients may ask for it once committed."""
    adapter = _checked(Adapter(engine=engine, name=name, path=path, description=description, enabled=enabled,
                               created_by=actor.user))
    adapter.save()
    _record_adapter(actor, "engine.adapter_add", adapter, audit.diff({}, adapter.audit_fields()))
    return adapter


@transaction.atomic
def adapter_update(*, actor, adapter, **fields):
    """Change an adapter's path, description or enabled; its name and base are what it is (remove and add).
    A new path is loaded by each worker at the adapter's next request."""
    changes = _part_changed(adapter, fields, {"path", "description", "enabled"},
                            "An adapter's name and base engine cannot change; remove it and add another.")
    if changes:
        _record_adapter(actor, "engine.adapter_update", adapter, changes)
    return adapter


@transaction.atomic
def adapter_remove(*, actor, adapter):
    """Remove an adapter: clients asking for it get 404 once committed. Its weights stay in the workers'
    memory (counted in the base's size) until the base model is next unloaded."""
    _record_adapter(actor, "engine.adapter_remove", adapter, audit.diff(adapter.audit_fields(), {}))
    adapter.delete()
