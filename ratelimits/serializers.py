from django.core.exceptions import ValidationError as ModelValidationError
from django.core.validators import RegexValidator
from rest_framework import serializers

from core.serializers import StrictInput

from .models import ENDPOINT_RULE, RateLimitPolicy


class RateLimitPolicySerializer(StrictInput, serializers.ModelSerializer):
    """A policy in and out. Unknown fields are an error (a typo should say so); the per-algorithm
    rules are the model's `clean()`, shared with the page's form."""

    class Meta:
        model = RateLimitPolicy
        fields = [
            "id", "name", "scope", "endpoint", "algorithm", "limit", "period_seconds", "burst", "action",
            "max_delay", "enabled", "created_at", "updated_at",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]
        # The model's clean() has the rule; this states it in the schema too (clean() catches a trailing newline).
        extra_kwargs = {"endpoint": {"validators": [RegexValidator(r"^/\S*$", ENDPOINT_RULE)]}}

    def validate(self, attrs):
        current = self.instance.audit_fields() if self.instance else {}
        candidate = RateLimitPolicy(**{**current, **attrs})
        try:
            candidate.clean()
        except ModelValidationError as exc:
            raise serializers.ValidationError(exc.message_dict) from exc
        return attrs
