"""Who is asking, cheaply, for counting: before any view has authenticated the request.

A credential only names its owner here; whether it is valid (revoked, expired, scoped) is for the
view's authentication to decide. So the mapping from a credential to its owner never changes and is
cached in the Django cache by the credential's SHA-256 (raw keys are never stored); JWTs carry their
user and are only checked for signature and expiry.
"""

import hashlib

from django.core.cache import cache
from django.urls import Resolver404, resolve
from rest_framework.authtoken.models import Token
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.tokens import AccessToken

from accounts.audit import client_ip
from accounts.authentication import PREFIX as API_KEY_PREFIX
from accounts.models import ApiKey

from .models import RateLimitPolicy

Scope = RateLimitPolicy.Scope
CREDENTIAL_CACHE_SECONDS = 60
NOBODY = (None, None)


def _owner_of_api_key(raw):
    digest = ApiKey.hash(raw)
    cache_key = f"ratelimit:credential:{digest}"
    found = cache.get(cache_key)
    if found is None:
        row = ApiKey.objects.filter(key_hash=digest).values_list("user_id", "pk").first()
        found = list(row) if row else list(NOBODY)
        cache.set(cache_key, found, CREDENTIAL_CACHE_SECONDS)
    return tuple(found)


def _owner_of_token(raw):
    cache_key = f"ratelimit:credential:{hashlib.sha256(raw.encode()).hexdigest()}"
    found = cache.get(cache_key)
    if found is None:
        found = [Token.objects.filter(key=raw).values_list("user_id", flat=True).first(), None]
        cache.set(cache_key, found, CREDENTIAL_CACHE_SECONDS)
    return tuple(found)


def _owner_of_jwt(raw):
    try:
        return AccessToken(raw).get(jwt_settings.USER_ID_CLAIM), None
    except TokenError:
        return NOBODY


def credential_owner(request):
    """`(user_id, api_key_id)` named by the Authorization header; Nones where it names nobody."""
    kind, _, raw = request.headers.get("Authorization", "").strip().partition(" ")
    raw = raw.strip()
    if not raw:
        return NOBODY
    if kind.lower() == "bearer":
        return _owner_of_api_key(raw) if raw.startswith(API_KEY_PREFIX) else _owner_of_jwt(raw)
    if kind.lower() == "token":
        return _owner_of_token(raw)
    return NOBODY


def _route(request):
    try:
        return resolve(request.path_info).route
    except Resolver404:
        return request.path_info


def identities(request, user, scopes):
    """{scope: identity} for the `scopes` asked about; a scope this request has no identity for (a
    user for an anonymous request, an API key for a session) is left out. `user` is the session's
    user (resolved by the caller: it may be async); a credential's owner counts when there is none."""
    found = {}
    user_id = user.pk if user is not None and user.is_authenticated else None
    key_id = None
    if (Scope.USER in scopes and user_id is None) or Scope.API_KEY in scopes:
        owner_id, key_id = credential_owner(request)
        user_id = owner_id if user_id is None else user_id
    if Scope.USER in scopes and user_id is not None:
        found[Scope.USER] = f"user:{user_id}"
    if Scope.API_KEY in scopes and key_id is not None:
        found[Scope.API_KEY] = f"key:{key_id}"
    if Scope.IP in scopes and client_ip(request):
        found[Scope.IP] = f"ip:{client_ip(request)}"
    if Scope.ENDPOINT in scopes:
        found[Scope.ENDPOINT] = f"route:{_route(request)}"
    if Scope.GLOBAL in scopes:
        found[Scope.GLOBAL] = "all"
    return found
