from rest_framework import serializers

from accounts.serializers import AuditEventSerializer
from core.serializers import StrictInput

from .models import IpBlock


class IpBlockSerializer(StrictInput, serializers.ModelSerializer):
    """An active block. `network` takes an address or a CIDR network and answers it normalised."""

    network = serializers.CharField(max_length=64)
    created_by = serializers.CharField(source="created_by.username", read_only=True, default=None, allow_null=True)

    class Meta:
        model = IpBlock
        fields = ["id", "network", "reason", "source", "expires_at", "created_by", "created_at"]
        read_only_fields = ["id", "source", "created_by", "created_at"]


class SecurityStatusSerializer(serializers.Serializer):
    blocks = IpBlockSerializer(many=True)
    events = AuditEventSerializer(many=True)
    counts = serializers.DictField(
        child=serializers.IntegerField(), help_text="Security events since `counts_since` (24 hours), by kind.",
    )
    counts_since = serializers.DateTimeField()
