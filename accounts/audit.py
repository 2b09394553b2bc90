"""The one way to write the audit log: `record(...)`. Services call it inside their transaction."""

from dataclasses import dataclass

from .models import AuditEvent

# Field names whose values never reach the log, before or after.
SECRET_FIELDS = {"api_key", "password", "secret", "secret_key", "key_hash", "token", "key"}
MASK = "••••••"


@dataclass(frozen=True)
class Actor:
    """Who acted and from where: a user, the API key they used, and the request's fingerprints."""

    user: object = None
    api_key: object = None
    ip: str | None = None
    user_agent: str = ""
    request_id: str = ""
    name: str = ""

    @classmethod
    def from_request(cls, request, user=None):
        user = user if user is not None else getattr(request, "user", None)
        if user is not None and not user.is_authenticated:
            user = None
        auth = getattr(request, "auth", None)
        api_key = auth if auth.__class__.__name__ == "ApiKey" else None
        return cls(
            user=user,
            api_key=api_key,
            ip=client_ip(request),
            user_agent=request.META.get("HTTP_USER_AGENT", "")[:300],
            request_id=getattr(request, "request_id", ""),
        )

    @classmethod
    def system(cls, name="system"):
        return cls(name=name)

    def describe(self):
        if self.user is None:
            return self.name or "anonymous"
        if self.api_key is not None:
            return f"{self.user.username} (key {self.api_key.prefix}…)"
        return self.user.username


def client_ip(request):
    # REMOTE_ADDR only: X-Forwarded-For is trivially forged unless a trusted proxy sets it.
    return request.META.get("REMOTE_ADDR") or None


def mask(field, value):
    if field in SECRET_FIELDS:
        return MASK if value else ""
    return value


def diff(before, after):
    """{field: [old, new]} for every field whose value changed, secrets masked; nested dicts flatten
    to dotted names (`config.precision`)."""
    changes = {}
    for field in sorted(set(before) | set(after)):
        old, new = before.get(field), after.get(field)
        if old == new or (old in (None, "") and new in (None, "")):
            continue
        if isinstance(old, dict) or isinstance(new, dict):
            for sub, pair in diff(old or {}, new or {}).items():
                changes[f"{field}.{sub}"] = pair
        elif field in SECRET_FIELDS:
            changes[field] = [mask(field, old), "••••••(changed)" if new else ""]
        else:
            changes[field] = [old, new]
    return changes


def snapshot(fields):
    """A record-ready copy of a target's fields with secrets masked."""
    return {
        key: snapshot(value) if isinstance(value, dict) else mask(key, value) for key, value in fields.items()
    }


def storable(value):
    """`value` with each NUL character written out as `\\x00`: PostgreSQL stores none in text or JSON,
    and an attack sample the threat screen caught may hold one."""
    if isinstance(value, str):
        return value.replace("\x00", "\\x00")
    if isinstance(value, dict):
        return {storable(key): storable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [storable(item) for item in value]
    return value


def record(*, actor, action, target=None, target_repr=None, changes=None, data=None):
    """Append one event. `target` is a model instance (or None); `changes` a `diff(...)` result."""
    return AuditEvent.objects.create(
        actor_user=actor.user,
        actor_key=actor.api_key,
        actor=actor.describe()[:200],
        action=action,
        target_type=target._meta.label_lower if target is not None else "",
        target_id=str(target.pk) if target is not None and target.pk is not None else "",
        target=storable(target_repr if target_repr is not None else str(target) if target is not None else "")[:300],
        changes=storable(changes or {}),
        data=storable(data or {}),
        ip=actor.ip,
        user_agent=actor.user_agent,
        request_id=actor.request_id,
    )
