"""What the OpenAPI schema says project-wide, written once here rather than on every view: a strict
serializer's request body takes no other properties (`AutoSchema`), and the refusals any /api/
operation can answer with, in the one error shape of `exceptions.error_body` (`document_refusals`)."""

from drf_spectacular import openapi

from blaze_site.serializers import StrictInput
from ratelimits.middleware import EXEMPT_PREFIXES


class AutoSchema(openapi.AutoSchema):
    def _map_basic_serializer(self, serializer, direction):
        schema = super()._map_basic_serializer(serializer, direction)
        if direction == "request" and isinstance(serializer, StrictInput):
            schema["additionalProperties"] = False  # StrictInput refuses unknown fields
        return schema


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
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path, operations in result["paths"].items():
        for operation in operations.values():
            for status, (description, applies) in REFUSALS.items():
                if applies(path, operation):
                    operation["responses"].setdefault(status, {"description": description, "content": error})
    return result
