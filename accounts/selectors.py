from django.db.models import Count, Prefetch, Q
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from .models import ApiKey, AuditEvent, RolePolicy, Team, User


def confirmed_totp_device(user):
    return TOTPDevice.objects.filter(user=user, confirmed=True).first()


def mfa_required_for(user):
    return RolePolicy.objects.filter(group__user=user, mfa_required=True).exists()


def api_keys_visible_to(user):
    keys = ApiKey.objects.select_related("user", "team")
    return keys if user.has_perm("accounts.view_all_apikeys") else keys.filter(user=user)


def live_api_keys():
    """Keys that still work: neither revoked nor expired."""
    return ApiKey.objects.filter(revoked_at__isnull=True).exclude(expires_at__lte=timezone.now())


def teams_visible_to(user):
    """Every team for a role that may view teams (admins); otherwise the user's own. Each with its
    members and `live_keys`, the number of its keys that still work."""
    teams = Team.objects.prefetch_related(Prefetch("members", User.objects.order_by("username"))).annotate(
        live_keys=Count("api_keys", filter=Q(api_keys__in=live_api_keys()), distinct=True)).order_by("name")
    return teams if user.has_perm("accounts.view_team") else teams.filter(members=user)


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
