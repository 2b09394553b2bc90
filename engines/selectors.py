from accounts.models import AuditEvent

from .models import Engine


def engine_list(*, kind="", enabled=None, search=""):
    engines = Engine.objects.all()
    if kind:
        engines = engines.filter(kind=kind)
    if enabled is not None:
        engines = engines.filter(enabled=enabled)
    if search:
        engines = engines.filter(name__icontains=search)
    return engines


def engine_history(engine, limit=20):
    return AuditEvent.objects.filter(target_type="engines.engine", target_id=str(engine.pk))[:limit]
