from django.core.exceptions import ValidationError as ModelValidationError
from rest_framework import serializers

from .models import RateLimitPolicy


class RateLimitPolicySerializer(serializers.ModelSerializer):
    """A policy in and out. Unknown fields are an error (a typo should say so); the per-algorithm
    rules are the model's `clean()`, shared with the page's form."""

    class Meta:
        model = RateLimitPolicy
        fields = [
            "id", "name", "scope", "endpoint", "algorithm", "limit", "period_seconds", "burst", "action",
            "max_delay", "enabled", "created_at", "updated_at",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]

    def to_internal_value(self, data):
        if hasattr(data, "keys"):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)

    def validate(self, attrs):
        current = self.instance.audit_fields() if self.instance else {}
        candidate = RateLimitPolicy(**{**current, **attrs})
        try:
            candidate.clean()
        except ModelValidationError as exc:
            raise serializers.ValidationError(exc.message_dict) from exc
        return attrs
