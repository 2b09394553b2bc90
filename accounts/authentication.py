import logging
from datetime import timedelta

from django import db
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from .models import ApiKey

log = logging.getLogger(__name__)

PREFIX = "blz_"


def bearer_api_key(request):
    """The raw key of `Authorization: Bearer blz_…`, or None when the request sends no API key."""
    header = authentication.get_authorization_header(request).decode(errors="replace").split()
    if len(header) != 2 or header[0].lower() != "bearer" or not header[1].startswith(PREFIX):
        return None
    return header[1]


def find_key(raw):
    """The ApiKey (its user loaded) whose hash matches `raw`, or None."""
    return ApiKey.objects.select_related("user").filter(key_hash=ApiKey.hash(raw)).first()


def check_key(key):
    """Raise AuthenticationFailed unless `key` (None: unknown) may be used now."""
    if key is None:
        raise exceptions.AuthenticationFailed("Unknown API key.")
    if key.revoked_at is not None:
        raise exceptions.AuthenticationFailed("This API key has been revoked.")
    if key.is_expired:
        raise exceptions.AuthenticationFailed("This API key has expired.")
    if not key.user.is_active:
        raise exceptions.AuthenticationFailed("The owner of this API key is deactivated.")


def stale_last_used(key):
    """Whether `key.last_used_at` should be written: one write a minute at most (last-used is for
    people, not for accounting)."""
    return key.last_used_at is None or timezone.now() - key.last_used_at > timedelta(minutes=1)


def mark_used(key):
    """Record that `key` was used now. A database that does not answer costs the record, not the
    request: /v1 answers from a cached key while it is away."""
    key.last_used_at = timezone.now()
    try:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=key.last_used_at)
    except (db.OperationalError, db.InterfaceError) as exc:
        log.warning("API key %s: last use not recorded, the database does not answer (%s)", key.pk, exc)


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer blz_…` → (key owner, ApiKey). Other bearer tokens are left to JWT."""

    def authenticate(self, request):
        raw = bearer_api_key(request)
        if raw is None:
            return None
        key = find_key(raw)
        check_key(key)
        if stale_last_used(key):
            mark_used(key)
        return key.user, key

    def authenticate_header(self, request):
        return 'Bearer realm="blaze"'


class ApiKeyScheme(OpenApiAuthenticationExtension):
    """How the OpenAPI schema documents API keys (drf-spectacular finds it by its target class)."""

    target_class = ApiKeyAuthentication
    name = "apiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "bearerFormat": f"{PREFIX}…"}
