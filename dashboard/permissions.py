"""Who may read metrics and detailed health: monitoring systems and signed-in users."""

import hmac
import ipaddress

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, permissions

from accounts.audit import client_ip
from accounts.models import ApiKey
from accounts.permissions import ScopePermission

SCRAPER = "metrics-token"


class MetricsTokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <BLAZE_METRICS_TOKEN>` → (anonymous, SCRAPER). Checked before the user
    authenticators, which would refuse a bearer token that is not theirs."""

    def authenticate(self, request):
        token = settings.BLAZE_METRICS_TOKEN
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if token and hmac.compare_digest(header.encode(), f"Bearer {token}".encode()):
            return AnonymousUser(), SCRAPER
        return None

    def authenticate_header(self, request):
        return 'Bearer realm="blaze"'  # so that no credential is a 401, as elsewhere in the API


class MetricsTokenScheme(OpenApiAuthenticationExtension):
    """How the OpenAPI schema documents the metrics token (drf-spectacular finds it by its target class)."""

    target_class = MetricsTokenAuthentication
    name = "metricsToken"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "BLAZE_METRICS_TOKEN"}


def allowed_address(request):
    ip = client_ip(request)
    if not ip:
        return False
    address = ipaddress.ip_address(ip)
    return any(address in ipaddress.ip_network(network, strict=False) for network in settings.BLAZE_METRICS_ALLOW_IPS)


def _user_may(request, view, permission):
    """The signed-in user's role holds `permission`, and an API key, if that is the credential, its scope."""
    if not (request.user and request.user.has_perm(permission)):
        return False
    return not isinstance(request.auth, ApiKey) or ScopePermission().has_permission(request, view)


class MonitoringAccess(permissions.BasePermission):
    """The metrics token, an address in BLAZE_METRICS_ALLOW_IPS, or a signed-in user whose role sees engines."""

    message = "Metrics and detailed health need BLAZE_METRICS_TOKEN, an allowed address, or a signed-in user."

    def has_permission(self, request, view):
        return request.auth == SCRAPER or allowed_address(request) or _user_may(request, view, "engines.view_engine")


class AdminsOnly(permissions.BasePermission):
    message = "Only admins may read the error summary."

    def has_permission(self, request, view):
        return _user_may(request, view, "accounts.view_auditevent")
