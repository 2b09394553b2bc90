"""One place that turns errors into the native API's JSON shape: {"error": msg, "fields": {...}}."""

from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from accounts.services import AuthError, ValidationFailed


def flatten(detail, prefix=""):
    """DRF's nested error detail → {"config.precision": ["message", …]}."""
    if isinstance(detail, dict):
        fields = {}
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


def error_body(message, fields=None):
    body = {"error": message}
    if fields:
        body["fields"] = fields
    return body


def api_exception_handler(exc, context):
    if isinstance(exc, ValidationFailed):
        exc = exceptions.ValidationError({exc.field: [exc.message]})
    if isinstance(exc, AuthError):
        fields = {exc.field: [str(exc)]} if exc.field else None
        return Response(error_body(str(exc), fields), status=status.HTTP_401_UNAUTHORIZED)
    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        fields = flatten(exc.detail)
        name, messages = next(iter(fields.items()))
        message = messages[0] if name == "non_field_errors" else f"{name}: {messages[0]}"
        response.data = error_body(message, fields)
    else:
        detail = response.data.get("detail", response.data) if isinstance(response.data, dict) else response.data
        response.data = error_body(str(detail))
    return response

