"""Writes for accounts: sign-in, lockout, MFA, users and roles, teams, API keys. Each records its audit event."""

import secrets
import time

from django.conf import settings
from django.contrib.auth import authenticate
from django.contrib.auth.models import Group
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from core.errors import Conflict, InvalidInput, NotAuthenticated, checked

from . import audit
from .models import ROLES, ApiKey, RolePolicy, Team, User
from .selectors import confirmed_totp_device, live_api_keys, mfa_required_for


def _lock_keys(username, ip):
    return f"lockout:user:{username.lower()}", f"lockout:ip:{ip}"


def lockout_remaining(username, ip):
    """Seconds until sign-in is allowed again for this user or IP; 0 when not locked."""
    user_key, ip_key = _lock_keys(username, ip)
    user_failures = cache.get(user_key, 0)
    ip_failures = cache.get(ip_key, 0)
    if user_failures >= settings.BLAZE_LOCKOUT_FAILURES:
        return _seconds_left(user_key)
    if ip_failures >= settings.BLAZE_LOCKOUT_IP_FAILURES:
        return _seconds_left(ip_key)
    return 0


def _seconds_left(key):
    until = cache.get(f"{key}:until")
    return max(1, round(until - time.time())) if until else settings.BLAZE_LOCKOUT_SECONDS


def _count_failure(key):
    # The first failure opens the window; its end is kept beside the count (Django's cache has no ttl()).
    if cache.add(key, 0, timeout=settings.BLAZE_LOCKOUT_SECONDS):
        cache.set(f"{key}:until", time.time() + settings.BLAZE_LOCKOUT_SECONDS, timeout=settings.BLAZE_LOCKOUT_SECONDS)
    return cache.incr(key)


def _failed(actor, username, reason):
    user_key, ip_key = _lock_keys(username, actor.ip)
    user_failures = _count_failure(user_key)
    ip_failures = _count_failure(ip_key)
    audit.record(actor=actor, action="auth.login_failed", target_repr=username, data={"reason": reason})
    if user_failures == settings.BLAZE_LOCKOUT_FAILURES or ip_failures == settings.BLAZE_LOCKOUT_IP_FAILURES:
        scope = "user" if user_failures >= settings.BLAZE_LOCKOUT_FAILURES else "ip"
        audit.record(
            actor=actor, action="auth.lockout", target_repr=username,
            data={"scope": scope, "seconds": settings.BLAZE_LOCKOUT_SECONDS},
        )


def _locked_message(seconds):
    minutes = max(1, round(seconds / 60))
    return f"Too many failed sign-in attempts. Try again in {minutes} minute{'s' if minutes != 1 else ''}."


def sign_in(*, actor, username, password, otp="", request=None):
    """Check credentials, lockout and TOTP; return `(user, device)` or raise NotAuthenticated.

    Used by the login page and by the token endpoints alike, so every way in has the same rules.
    """
    if lockout_remaining(username, actor.ip):
        raise NotAuthenticated(_locked_message(lockout_remaining(username, actor.ip)))
    user = authenticate(request, username=username, password=password)
    if user is None:
        _failed(actor, username, "bad credentials")
        if lockout_remaining(username, actor.ip):
            raise NotAuthenticated(_locked_message(lockout_remaining(username, actor.ip)))
        raise NotAuthenticated("Username or password is incorrect.")
    device = confirmed_totp_device(user)
    if device is not None:
        if not otp:
            raise NotAuthenticated("This account uses two-factor authentication: enter the 6-digit code.", field="otp")
        if not device.verify_token(otp.strip()):
            _failed(actor, username, "bad TOTP code")
            raise NotAuthenticated("The authentication code is incorrect or expired.", field="otp")
    cache.delete(_lock_keys(username, actor.ip)[0])
    actor = audit.Actor(**{**actor.__dict__, "user": user})
    audit.record(actor=actor, action="auth.login", target=user, data={"mfa": device is not None})
    return user, device


def sign_in_for_api(*, actor, username, password, otp=""):
    """As `sign_in`, but an account whose role requires TOTP must have enrolled first."""
    user, device = sign_in(actor=actor, username=username, password=password, otp=otp)
    if device is None and mfa_required_for(user):
        raise NotAuthenticated("Your role requires two-factor authentication: enrol on your account page first.")
    return user


def sign_out(*, actor):
    audit.record(actor=actor, action="auth.logout", target=actor.user)


@transaction.atomic
def mfa_start(*, user):
    """A fresh unconfirmed TOTP device for `user` (replacing any earlier unconfirmed one)."""
    TOTPDevice.objects.filter(user=user, confirmed=False).delete()
    return TOTPDevice.objects.create(user=user, name="Authenticator app", confirmed=False)


@transaction.atomic
def mfa_confirm(*, actor, user, token):
    device = TOTPDevice.objects.filter(user=user, confirmed=False).first()
    if device is None:
        raise InvalidInput("Start enrolment first.", field="token")
    if not device.verify_token((token or "").strip()):
        raise InvalidInput("That code is not right. Check the time on your phone and try the next code.", field="token")
    TOTPDevice.objects.filter(user=user, confirmed=True).delete()
    device.confirmed = True
    device.save()
    audit.record(actor=actor, action="mfa.enrol", target=user)
    return device


@transaction.atomic
def mfa_disable(*, actor, user):
    if mfa_required_for(user):
        raise InvalidInput("Your role requires two-factor authentication; it cannot be turned off.", field="mfa")
    deleted, _ = TOTPDevice.objects.filter(user=user).delete()
    if deleted:
        audit.record(actor=actor, action="mfa.disable", target=user)


def _user_fields(user):
    return {
        "username": user.username, "email": user.email, "role": user.role, "is_active": user.is_active,
    }


def _validate_role(role):
    if role not in ROLES:
        raise InvalidInput(f"Must be one of: {', '.join(ROLES)}.", field="role")


@transaction.atomic
def user_create(*, actor, username, password, role, email="", is_active=True):
    _validate_role(role)
    if User.objects.filter(username__iexact=username).exists():
        raise Conflict("A user with that username already exists.", field="username")
    user = User.objects.create_user(username=username, password=password, email=email, is_active=is_active)
    user.groups.set([Group.objects.get(name=role)])
    audit.record(actor=actor, action="user.create", target=user, changes=audit.diff({}, _user_fields(user)))
    return user


@transaction.atomic
def user_update(*, actor, user, role=None, is_active=None, email=None):
    before = _user_fields(user)
    if role is not None:
        _validate_role(role)
        user.groups.set([Group.objects.get(name=role)])
    if is_active is not None:
        user.is_active = is_active
    if email is not None:
        user.email = email
    user.save()
    changes = audit.diff(before, _user_fields(user))
    if changes:
        action = "user.role_change" if set(changes) == {"role"} else "user.update"
        audit.record(actor=actor, action=action, target=user, changes=changes)
    return user


@transaction.atomic
def password_change(*, actor, user, new_password):
    user.set_password(new_password)
    user.save()
    audit.record(actor=actor, action="user.password_change", target=user)


@transaction.atomic
def role_policy_set(*, actor, role, mfa_required):
    _validate_role(role)
    policy, _ = RolePolicy.objects.get_or_create(group=Group.objects.get(name=role))
    if policy.mfa_required != mfa_required:
        audit.record(
            actor=actor, action="role.policy_update", target=policy.group, target_repr=f"role {role}",
            changes={"mfa_required": [policy.mfa_required, mfa_required]},
        )
        policy.mfa_required = mfa_required
        policy.save()
    return policy


def _team_fields(team):
    return {"name": team.name, "description": team.description}


def _checked_team(team):
    """`team` after its field rules, its name unique regardless of case (`ml` and `ML` would read as one team)."""
    checked(team, validate_unique=False)
    if Team.objects.filter(name__iexact=team.name).exclude(pk=team.pk).exists():
        raise Conflict("A team with that name already exists.", field="name")
    return team


def _live_keys_named(keys):
    names = [key.name for key in keys[:3]]
    more = len(keys) - len(names)
    return ", ".join(names) + (f" and {more} more" if more else "")


@transaction.atomic
def team_create(*, actor, name, description=""):
    team = _checked_team(Team(name=name, description=description))
    team.save()
    audit.record(actor=actor, action="team.create", target=team, changes=audit.diff({}, _team_fields(team)))
    return team


@transaction.atomic
def team_update(*, actor, team, name=None, description=None):
    before = _team_fields(team)
    if name is not None:
        team.name = name
    if description is not None:
        team.description = description
    _checked_team(team).save()
    changes = audit.diff(before, _team_fields(team))
    if changes:
        audit.record(actor=actor, action="team.update", target=team, changes=changes)
    return team


@transaction.atomic
def team_delete(*, actor, team):
    """Delete a team that no live key counts for. Its revoked and expired keys, which can never be
    used again, are detached first (their `apikey.create` events still name the team)."""
    live = list(live_api_keys().filter(team=team).order_by("name"))
    if live:
        raise Conflict(f"Team {team.name} still has {len(live)} live API key{'s' if len(live) != 1 else ''} "
                       f"({_live_keys_named(live)}): revoke them first.")
    detached = sorted(team.api_keys.values_list("pk", flat=True))
    team.api_keys.update(team=None)
    audit.record(actor=actor, action="team.delete", target=team, changes=audit.diff(_team_fields(team), {}),
                 data={"members": sorted(team.members.values_list("username", flat=True)),
                       "detached_keys": detached})
    team.delete()


@transaction.atomic
def team_member_add(*, actor, team, user):
    if team.members.filter(pk=user.pk).exists():
        return team
    team.members.add(user)
    audit.record(actor=actor, action="team.member_add", target=team, data={"member": user.username})
    return team


@transaction.atomic
def team_member_remove(*, actor, team, user):
    """Take `user` out of `team`; refused while a live key of theirs counts for it (it could not have
    been issued now, and would go on spending the team's budget)."""
    live = list(live_api_keys().filter(team=team, user=user).order_by("name"))
    if live:
        raise Conflict(f"{user.username} has {len(live)} live API key{'s' if len(live) != 1 else ''} for team "
                       f"{team.name} ({_live_keys_named(live)}): revoke them first.")
    if team.members.filter(pk=user.pk).exists():
        team.members.remove(user)
        audit.record(actor=actor, action="team.member_remove", target=team, data={"member": user.username})
    return team


@transaction.atomic
def api_key_create(*, actor, user, name, scopes, expires_at=None, priority=None, team=None):
    """Create a key; returns `(api_key, raw_key)`. The raw key exists only in this return value.
    `priority` (None: the owner's role's) may exceed the owner's role's only when an admin creates it.
    `team` (None: the owner's own key) must be one of the owner's teams."""
    scopes = sorted(set(scopes))
    if team is not None and not team.members.filter(pk=user.pk).exists():
        raise InvalidInput(f"{user.username} is not a member of team {team.name}: a key may be issued only for "
                           "a team its owner belongs to.", field="team")
    if priority is not None and priority > user.priority and actor.user is not None and actor.user.role != "admin":
        raise InvalidInput(f"Must be at most {user.priority}, your role's priority; an admin may set more.",
                           field="priority")
    unknown = [scope for scope in scopes if scope not in ApiKey.SCOPES]
    if not scopes or unknown:
        raise InvalidInput(f"Choose one or more of: {', '.join(ApiKey.SCOPES)}.", field="scopes")
    if expires_at is not None and expires_at <= timezone.now():
        raise InvalidInput("The expiry must be in the future.", field="expires_at")
    raw_key = f"blz_{secrets.token_urlsafe(32)}"
    key = ApiKey.objects.create(
        user=user, name=name, prefix=raw_key[:12], key_hash=ApiKey.hash(raw_key), scopes=scopes,
        expires_at=expires_at, priority=priority, team=team,
    )
    audit.record(
        actor=actor, action="apikey.create", target=key,
        changes=audit.diff({}, {"name": name, "owner": user.username, "scopes": scopes,
                                "expires_at": expires_at.isoformat() if expires_at else None, "priority": priority,
                                "team": team.name if team else None}),
    )
    return key, raw_key


@transaction.atomic
def api_key_revoke(*, actor, key):
    if key.revoked_at is not None:
        return key
    key.revoked_at = timezone.now()
    key.save(update_fields=["revoked_at"])
    audit.record(actor=actor, action="apikey.revoke", target=key)
    return key
