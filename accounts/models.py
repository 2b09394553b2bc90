import hashlib

from django.conf import settings
from django.contrib.auth.models import AbstractUser, Group
from django.core.validators import MaxValueValidator
from django.db import models
from django.utils import timezone

ROLES = ("admin", "operator", "viewer")
MAX_PRIORITY = 9


class User(AbstractUser):
    """A person who signs in. Their role is the one role group they belong to."""

    @property
    def role(self):
        names = {group.name for group in self.groups.all()}
        return next((role for role in ROLES if role in names), None)

    @property
    def priority(self):
        """The scheduling priority of this user's requests (BLAZE_ROLE_PRIORITY by role; 0 without one)."""
        return settings.BLAZE_ROLE_PRIORITY.get(self.role, 0)


class RolePolicy(models.Model):
    """Per-role security settings an admin can change (today: whether TOTP is required)."""

    group = models.OneToOneField(Group, on_delete=models.CASCADE, related_name="policy")
    mfa_required = models.BooleanField(default=False)

    def __str__(self):
        return f"{self.group.name} policy"


class Team(models.Model):
    """A group of users that API keys may be issued for, so that usage and budgets count per team.

    Membership grants nothing: roles alone decide what a user may do.
    """

    name = models.SlugField(max_length=50, unique=True, help_text="Letters, digits, hyphens, underscores.")
    description = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="teams", blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class ApiKey(models.Model):
    """A secret an application sends as `Authorization: Bearer blz_…`.

    Only the SHA-256 of the key is stored: keys are 256-bit random strings, so a fast hash is
    enough (no dictionary to attack) and lets a request find its key with one indexed lookup.
    """

    SCOPES = ("inference", "read", "manage")

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, help_text="The first characters, to tell keys apart.")
    key_hash = models.CharField(max_length=64, unique=True)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    priority = models.PositiveSmallIntegerField(
        null=True, blank=True, validators=[MaxValueValidator(MAX_PRIORITY)],
        help_text="0-9, 9 first: the default and the most its requests may ask for. Blank: its owner's role's.",
    )
    # PROTECT: a key's usage counts against its team's budget; a team deleted from under a live key
    # would turn it into a personal key and let its spend escape that budget unnoticed. The service
    # refuses to delete a team with live keys and detaches its dead ones first.
    team = models.ForeignKey(
        Team, null=True, blank=True, on_delete=models.PROTECT, related_name="api_keys",
        help_text="The team its usage counts for; one its owner belongs to. Blank: its owner's own.",
    )

    class Meta:
        ordering = ["-created_at"]
        permissions = [("view_all_apikeys", "Can see and revoke every user's API keys")]

    def __str__(self):
        return f"{self.name} ({self.prefix}…)"

    @property
    def effective_priority(self):
        return self.user.priority if self.priority is None else self.priority

    @staticmethod
    def hash(raw_key):
        return hashlib.sha256(raw_key.encode()).hexdigest()

    @property
    def is_expired(self):
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def is_active(self):
        return self.revoked_at is None and not self.is_expired

    @property
    def state(self):
        if self.revoked_at:
            return "revoked"
        return "expired" if self.is_expired else "active"


class AuditEventQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise PermissionError("Audit events are append-only.")

    def delete(self):
        raise PermissionError("Audit events are append-only.")


class AuditEvent(models.Model):
    """One state-changing act, written once by `accounts.audit.record` and never changed.

    Append-only twice over: the model refuses updates and deletes, and database triggers
    (migration 0003) refuse raw SQL updates too (and deletes on PostgreSQL).
    """

    time = models.DateTimeField(default=timezone.now, db_index=True)
    # No FK constraint: events outlive the users and keys they name.
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.DO_NOTHING,
        db_constraint=False, related_name="+",
    )
    actor_key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+",
    )
    actor = models.CharField(max_length=200, db_index=True, help_text="Who, as it read at the time.")
    action = models.CharField(max_length=100, db_index=True)
    target_type = models.CharField(max_length=100, blank=True)
    target_id = models.CharField(max_length=100, blank=True)
    target = models.CharField(max_length=300, blank=True, db_index=True)
    changes = models.JSONField(default=dict, blank=True)
    data = models.JSONField(default=dict, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    request_id = models.CharField(max_length=100, blank=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-time", "-id"]

    def __str__(self):
        return f"{self.time:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.target}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise PermissionError("Audit events are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionError("Audit events are append-only.")
