"""Writes to the engine registry and to the workers' model caches. Each records exactly one audit
event; input was validated by the serializer before."""

from django.db import transaction

from accounts import audit

from .models import Engine


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
    name = engine.name
    engine.delete()
    transaction.on_commit(lambda: unload_everywhere(name))


class WorkerUnavailable(Exception):
    """The worker is lost or did not answer in time."""


def _worker_call(task, worker_id, *args, timeout=600):
    from celery.exceptions import TimeoutError as CeleryTimeout

    from .lifecycle import worker_info
    from .worker import worker_queue

    info = worker_info(worker_id)
    if info is None or info["lost"]:
        raise WorkerUnavailable(f"Worker {worker_id} is not running (no recent heartbeat).")
    try:
        return task.apply_async(args=args, queue=worker_queue(worker_id)).get(timeout=timeout)
    except CeleryTimeout as exc:
        raise WorkerUnavailable(f"Worker {worker_id} did not answer within {timeout} s.") from exc


def cache_load(*, actor, worker_id, engine):
    """Load (warm) an engine's model on a worker; raises the worker's load error when it fails."""
    from .runtimes import EngineSpec
    from .tasks import cache_load as task

    entry = _worker_call(task, worker_id, EngineSpec.from_engine(engine).as_dict())
    audit.record(actor=actor, action="cache.load", target=engine,
                 data={"worker": worker_id, "bytes": entry["bytes"], "estimated_bytes": entry["estimated_bytes"]})
    return entry


def cache_unload(*, actor, worker_id, engine_name):
    from .tasks import cache_unload as task

    unloaded = _worker_call(task, worker_id, engine_name, timeout=120)
    if unloaded:
        audit.record(actor=actor, action="cache.unload", target_repr=engine_name, data={"worker": worker_id})
    return unloaded


def cache_evict(*, actor, worker_id):
    """Evict the worker's least recently used model; returns its engine name or None."""
    from .tasks import cache_evict as task

    victim = _worker_call(task, worker_id, timeout=120)
    if victim:
        audit.record(actor=actor, action="cache.evict", target_repr=victim, data={"worker": worker_id})
    return victim


def unload_everywhere(engine_name):
    """Ask every worker to drop an engine (after disable or delete); a broker outage is logged, not fatal."""
    import logging

    from .tasks import unload_everywhere as task

    from blaze_site.celery import CONTROL

    try:
        # Declaring the queue tells this process the exchange fans out; undeclared, the Redis
        # transport would treat it as direct and the message would reach no worker.
        task.apply_async(args=[engine_name], queue=CONTROL, declare=[CONTROL])
    except Exception:
        logging.getLogger(__name__).exception("could not broadcast unload of %s", engine_name)
