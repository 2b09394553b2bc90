"""Blaze's one error hierarchy: what went wrong, in words a person can act on, and the input at fault.

No HTTP here: the core raises these, and only the edges choose a status (`core.http_errors`
for pages and /api/, `engines.openai.views` for /v1, in OpenAI's shape). Each class has a `kind`,
the name it travels under in a worker's `error` event (`engines.contract`).

Two families: the caller's errors (bad input, no credentials, no permission, nothing of that name),
answered as they are and never retried; and a target's failures (`TargetFailed` and below), which
a route answers by failing over to its next target.
"""

from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from django.db.models import Model

ModelInstance = TypeVar("ModelInstance", bound="Model")


class ApplicationError(Exception):
    """`message`: for the person; `field`: the input at fault, if one is; `code`: a stable machine name."""

    kind = "application_error"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message, self.field, self.code = message, field, code


class InvalidInput(ApplicationError):
    kind = "invalid_input"


class Conflict(InvalidInput):
    """The input names something that must be unique and is taken (a name, a route's engine on a
    worker): the request itself is well formed, so the edges answer 409, not 400."""

    kind = "conflict"


class NotAuthenticated(ApplicationError):
    kind = "not_authenticated"


class PermissionDenied(ApplicationError):
    kind = "permission_denied"


class NotFound(ApplicationError):
    kind = "not_found"


class MethodNotAllowed(ApplicationError):
    kind = "method_not_allowed"


class RateLimited(ApplicationError):
    """Over a rate-limit policy (`ratelimits`); the message says when to try again."""

    kind = "rate_limited"


class ServiceUnavailable(ApplicationError):
    """Blaze's own Redis or database does not answer: no target is at fault, so none is tried instead
    and no breaker counts it; the client may retry shortly."""

    kind = "service_unavailable"


class TargetFailed(ApplicationError):
    """The target (a worker's engine, a remote host) failed: another may answer."""

    kind = "failed"


class Unavailable(TargetFailed):
    """Nothing can take the request now (no live worker, an open breaker, a model that cannot load)."""

    kind = "unavailable"


class TimedOut(TargetFailed):
    kind = "timed_out"


class UpstreamFailed(TargetFailed):
    """A remote host answered with a server error, broke off, or could not be reached."""

    kind = "upstream_failed"


class Overloaded(TargetFailed):
    """A target is full (a bulkhead's cap): another target may answer, and the client may retry after
    `retry_after` seconds. The target did not fail: no breaker or health record counts it."""

    kind = "overloaded"

    def __init__(self, message: str, *, retry_after: float = 1, field: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message, field=field, code=code or self.kind)
        self.retry_after = retry_after


class QueueFull(Overloaded):
    """The engine's waiting line (its `max_queue`) is full."""

    kind = "queue_full"


class WorkerBusy(Overloaded):
    """The worker already runs its most requests at once (BLAZE_WORKER_MAX_IN_FLIGHT)."""

    kind = "worker_busy"


class StorageFull(ApplicationError):
    """Blaze's own store (generated images) cannot take what it was asked to keep."""

    kind = "storage_full"


class OutOfMemory(TargetFailed):
    """The model does not fit in the worker's model cache."""

    kind = "out_of_memory"


def checked(instance: ModelInstance, **full_clean_options: Any) -> ModelInstance:
    """A model instance after its field rules and `clean()` (Django's `full_clean`), the first broken
    one raised as InvalidInput naming its field (Conflict when every one is a taken value, Django's
    code `unique`): the one way services validate a model."""
    from django.core.exceptions import NON_FIELD_ERRORS, ValidationError

    try:
        instance.full_clean(**full_clean_options)
    except ValidationError as exc:
        field, messages = next(iter(exc.message_dict.items()))
        taken = all(error.code == "unique" for errors in exc.error_dict.values() for error in errors)
        raise (Conflict if taken else InvalidInput)(
            messages[0], field="non_field_errors" if field == NON_FIELD_ERRORS else field) from exc
    return instance


KINDS: dict[str, type[ApplicationError]] = {cls.kind: cls for cls in (
    InvalidInput, NotAuthenticated, PermissionDenied, NotFound, MethodNotAllowed,
    TargetFailed, Unavailable, TimedOut, UpstreamFailed, OutOfMemory, Overloaded, QueueFull, WorkerBusy,
    ServiceUnavailable,
)}
