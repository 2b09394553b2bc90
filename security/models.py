import ipaddress

from django.conf import settings
from django.db import models
from django.utils import timezone


class IpBlockQuerySet(models.QuerySet):
    def active(self, now=None):
        now = now or timezone.now()
        return self.filter(models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now))


class IpBlock(models.Model):
    """A client address or network refused with 403 on every request but `/health`.

    `network` is normalised: a single address as itself (`203.0.113.7`, `2001:db8::1`), a wider
    network in CIDR form (`10.0.0.0/8`); one row per network. A block with `expires_at` lifts
    itself then; unblocking deletes the row (the audit log keeps its history).
    """

    class Source(models.TextChoices):
        MANUAL = "manual"
        AUTO = "auto", "Automatic"

    network = models.CharField(max_length=64, unique=True)
    reason = models.CharField(max_length=300)
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.MANUAL)
    expires_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
    )
    created_at = models.DateTimeField(default=timezone.now)

    objects = IpBlockQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return self.network

    @staticmethod
    def normalise(value):
        """`value` as stored in `network`; raises ValueError when it is no address or network."""
        network = ipaddress.ip_network(str(value).strip(), strict=False)
        return str(network.network_address) if network.num_addresses == 1 else str(network)
