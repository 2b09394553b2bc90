"""Where errors meet HTTP: each `core.errors` class's status, and the native API's JSON shape
{"error": msg, "fields": {...}} (the /v1 views give the same statuses in OpenAI's shape)."""

from typing import Any

import kombu.exceptions
import redis
from django import db
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler

from core import errors

HTTP_STATUS = {
    errors.InvalidInput: 400, errors.NotAuthenticated: 401, errors.PermissionDenied: 403, errors.NotFound: 404,
    errors.MethodNotAllowed: 405, errors.Conflict: 409, errors.RateLimited: 429, errors.TargetFailed: 500,
    errors.UpstreamFailed: 502, errors.Unavailable: 503, errors.ServiceUnavailable: 503, errors.TimedOut: 504,
    errors.OutOfMemory: 507, errors.StorageFull: 507, errors.Overloaded: 503, errors.QueueFull: 429,
    errors.WorkerBusy: 503,
}


# Blaze's own dependencies not answering: Redis (also as Celery's broker) and the database.
OUTAGES = (redis.RedisError, kombu.exceptions.OperationalError, db.OperationalError, db.InterfaceError)
RETRY_AFTER_SECONDS = 5


def outage(exc: BaseException) -> errors.ServiceUnavailable:
    """The ServiceUnavailable a dependency's failure (one of OUTAGES) is answered with."""
    if isinstance(exc, db.Error):
        return errors.ServiceUnavailable("The database does not answer; try again in a few seconds.",
                                         code="database_unavailable")
    return errors.ServiceUnavailable("Redis does not answer; try again in a few seconds.", code="redis_unavailable")


def http_status(exc: errors.ApplicationError) -> int:
    """The status an ApplicationError is answered with: its own class's, else its nearest base's."""
    return next((HTTP_STATUS[cls] for cls in type(exc).__mro__ if cls in HTTP_STATUS), 500)


def flatten(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    """DRF's nested error detail → {"config.precision": ["message", …]}."""
    if isinstance(detail, dict):
        fields: dict[str, list[str]] = {}
        for key, value in detail.items():
            name = prefix if key == "non_field_errors" and prefix else f"{prefix}.{key}" if prefix else str(key)
            fields.update(flatten(value, name))
        return fields
    if isinstance(detail, list) and detail and all(isinstance(item, (dict, list)) for item in detail):
        fields = {}
        for index, item in enumerate(detail):
            fields.update(flatten(item, f"{prefix}.{index}" if prefix else str(index)))
        return fields
    messages = [str(item) for item in detail] if isinstance(detail, list) else [str(detail)]
    return {prefix or "non_field_errors": messages}


def codes(detail: Any) -> list[Any]:
    """Every code in a DRF ValidationError's nested `get_codes()`."""
    if isinstance(detail, dict):
        return [code for value in detail.values() for code in codes(value)]
    if isinstance(detail, list):
        return [code for value in detail for code in codes(value)]
    return [detail]


def is_conflict(exc: BaseException) -> bool:
    """An errors.Conflict, or a ValidationError whose every fault is a value already taken (the code
    `unique` of DRF's UniqueValidator, as of Django's unique checks): answered 409, not 400."""
    if isinstance(exc, errors.Conflict):
        return True
    return isinstance(exc, exceptions.ValidationError) and set(codes(exc.get_codes())) == {"unique"}


def error_body(message: str, fields: dict[str, list[str]] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": message}
    if fields:
        body["fields"] = fields
    return body


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, OUTAGES):
        response = Response(error_body(outage(exc).message), status=503)
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    conflict = is_conflict(exc)
    if isinstance(exc, errors.InvalidInput):
        exc = exceptions.ValidationError({exc.field or "non_field_errors": [exc.message]})
    elif isinstance(exc, errors.ApplicationError):
        fields = {exc.field: [exc.message]} if exc.field else None
        response = Response(error_body(exc.message, fields), status=http_status(exc))
        if isinstance(exc, errors.Overloaded):
            response["Retry-After"] = str(exc.retry_after)
        return response
    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        fields = flatten(exc.detail)
        name, messages = next(iter(fields.items()))
        message = messages[0] if name == "non_field_errors" else f"{name}: {messages[0]}"
        response.data = error_body(message, fields)
        if conflict:
            response.status_code = 409
    else:
        detail = response.data.get("detail", response.data) if isinstance(response.data, dict) else response.data
        response.data = error_body(str(detail))
    return response

