from django.db.models import Q
from django_otp.plugins.otp_totp.models import TOTPDevice

from .models import ApiKey, AuditEvent, RolePolicy


def confirmed_totp_device(user):
    return TOTPDevice.objects.filter(user=user, confirmed=True).first()


def mfa_required_for(user):
    return RolePolicy.objects.filter(group__user=user, mfa_required=True).exists()


def api_keys_visible_to(user):
    keys = ApiKey.objects.select_related("user")
    return keys if user.has_perm("accounts.view_all_apikeys") else keys.filter(user=user)


def audit_events(*, actor="", action="", target="", since=None, until=None):
    """Events newest first; `action` matches a dotted prefix (`engine` finds `engine.update`)."""
    events = AuditEvent.objects.all()
    if actor:
        events = events.filter(actor__icontains=actor)
    if action:
        events = events.filter(Q(action=action) | Q(action__startswith=f"{action}."))
    if target:
        events = events.filter(target__icontains=target)
    if since:
        events = events.filter(time__gte=since)
    if until:
        events = events.filter(time__lte=until)
    return events
