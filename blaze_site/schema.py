"""What the OpenAPI schema says project-wide, written once here rather than on every view: a strict
serializer's request body takes no other properties and a change that may find its value taken
answers 409 (`AutoSchema`), and the refusals any /api/ operation can answer with, in the one error
shape of `exceptions.error_body` (`document_refusals`)."""

from django.db.models import UniqueConstraint
from drf_spectacular import openapi
from rest_framework.validators import UniqueValidator

from core.serializers import StrictInput
from ratelimits.middleware import EXEMPT_PREFIXES

ERROR_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
CONFLICT = {"description": "A value that must be unique is taken (`fields` names it): a name, a route's engine "
                           "on a worker.", "content": ERROR_CONTENT}


def may_find_taken(serializer):
    """Whether input through `serializer` may name a value another row holds (core.http_errors
    answers 409): a writable field with DRF's UniqueValidator, or one in its model's unique constraints."""
    model = getattr(getattr(serializer, "Meta", None), "model", None)
    if model is None:
        return False
    writable = [field for field in serializer.fields.values() if not field.read_only]
    constrained = {name for constraint in model._meta.constraints if isinstance(constraint, UniqueConstraint)
                   for name in constraint.fields}
    return any(field.source in constrained or any(isinstance(v, UniqueValidator) for v in field.validators)
               for field in writable)


class AutoSchema(openapi.AutoSchema):
    def _map_basic_serializer(self, serializer, direction):
        schema = super()._map_basic_serializer(serializer, direction)
        if direction == "request" and isinstance(serializer, StrictInput):
            schema["additionalProperties"] = False  # StrictInput refuses unknown fields
        return schema

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        if self.method in ("POST", "PUT", "PATCH") and may_find_taken(self.get_request_serializer()):
            responses.setdefault("409", CONFLICT)
        return responses


ERROR = {
    "type": "object",
    "properties": {
        "error": {"type": "string"},
        "fields": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}},
    },
    "required": ["error"],
}


def _every(path, operation):
    return True


def _names_an_object(path, operation):
    return any(parameter["in"] == "path" for parameter in operation.get("parameters", ()))


def _has_a_body(path, operation):
    return "requestBody" in operation


def _rate_limited(path, operation):
    return not path.startswith(EXEMPT_PREFIXES)


# Each status: why it is given, and to which operations it applies.
REFUSALS = {
    "400": ("Invalid input (`fields` names each field at fault), or input that looks like an attack.", _every),
    "401": ("Credentials missing, unknown, revoked or expired.", _every),
    "403": ("The role or the API key's scopes do not allow this, or the client's address is blocked.", _every),
    "404": ("Nothing has that name or id.", _names_an_object),
    "413": ("The request body is over BLAZE_MAX_REQUEST_BYTES.", _every),
    "415": ("The request body is not JSON (or, for the credential exchanges, a form).", _has_a_body),
    "429": ("Over a rate-limit policy; Retry-After says when to try again.", _rate_limited),
    "503": ("Redis or the database does not answer (the message says which); Retry-After says when to try "
            "again.", _every),
}


def document_refusals(result, generator, request, public):
    """drf-spectacular's postprocessing hook (SPECTACULAR_SETTINGS)."""
    result["components"]["schemas"]["Error"] = ERROR
    for path, operations in result["paths"].items():
        for operation in operations.values():
            for status, (description, applies) in REFUSALS.items():
                if applies(path, operation):
                    operation["responses"].setdefault(status, {"description": description, "content": ERROR_CONTENT})
    return result
