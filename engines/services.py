"""Writes to the engine registry. Each function validates nothing itself (the serializer did) and
records exactly one audit event."""

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
    audit.record(
        actor=actor, action="engine.enable" if enabled else "engine.disable", target=engine,
        changes={"enabled": [not enabled, enabled]},
    )
    return engine


@transaction.atomic
def engine_delete(*, actor, engine):
    audit.record(actor=actor, action="engine.delete", target=engine, changes=audit.diff(engine.audit_fields(), {}))
    engine.delete()
