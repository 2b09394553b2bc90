from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.serializers import StrictInput

from . import budgets
from .models import Budget, Price

GROUPS = ("engine", "route", "kind", "user", "api_key", "team")


class PriceSerializer(StrictInput, serializers.ModelSerializer):
    """An engine's price, per million tokens, per image or per worker-hour, in `currency` (ISO 4217)."""

    currency = serializers.RegexField(r"^[A-Z]{3}$", max_length=3, required=False,
                                      error_messages={"invalid": "Three capital letters, as ISO 4217 (USD, EUR)."})

    class Meta:
        model = Price
        fields = ["engine", "currency", "per_1m_prompt", "per_1m_cached", "per_1m_completion", "per_image",
                  "per_1m_embedding", "per_worker_hour", "updated_at"]
        read_only_fields = ["updated_at"]
        # Numbers in JSON, as the schema says (DRF's default is a string that a number also passes).
        extra_kwargs = {name: {"coerce_to_string": False} for name in (
            "per_1m_prompt", "per_1m_cached", "per_1m_completion", "per_image", "per_1m_embedding", "per_worker_hour")}


class UsageQuery(StrictInput, serializers.Serializer):
    """`GET /api/usage/`'s query: sums per `period` (hour or day, UTC) and per `group_by`, from `since`
    (default: 30 days ago) until `until` (default: now); admins may narrow to one `user`."""

    period = serializers.ChoiceField(["hour", "day"], default="day")
    group_by = serializers.ChoiceField(GROUPS, default="engine")
    since = serializers.DateTimeField(required=False)
    until = serializers.DateTimeField(required=False)
    user = serializers.IntegerField(required=False, min_value=1)

    def validate(self, attrs):
        if attrs.get("since") and attrs.get("until") and attrs["since"] >= attrs["until"]:
            raise serializers.ValidationError({"until": ["Must be after `since`."]})
        return attrs


class StandingSerializer(serializers.Serializer):
    spent = serializers.DecimalField(max_digits=24, decimal_places=8, coerce_to_string=False,
                                     help_text="Settled this period.")
    reserved = serializers.DecimalField(max_digits=24, decimal_places=8, coerce_to_string=False,
                                        help_text="Held by requests in flight (their worst case).")
    remaining = serializers.DecimalField(max_digits=24, decimal_places=8, coerce_to_string=False,
                                         help_text="What the hard limit leaves.")
    resets_at = serializers.DateTimeField(allow_null=True, help_text="When the period ends; null for a total.")


class BudgetSerializer(StrictInput, serializers.ModelSerializer):
    """A budget: `scope` (key, user, team) and `target_id` name whose requests it counts; `metric`
    (tokens, requests, cost) what; `period` (day, week, month, total) over what time; `limit` how much
    before requests are refused; `soft_limit` (optional, below `limit`) how much before the
    `budget-soft-limit` alert fires. `standing`: where its current period stands."""

    standing = serializers.SerializerMethodField()

    class Meta:
        model = Budget
        fields = ["id", "name", "scope", "target_id", "metric", "period", "limit", "soft_limit", "enabled",
                  "created_at", "standing"]
        read_only_fields = ["id", "created_at"]
        # Numbers in JSON, as the schema says.
        extra_kwargs = {"limit": {"coerce_to_string": False}, "soft_limit": {"coerce_to_string": False}}

    @extend_schema_field(StandingSerializer)
    def get_standing(self, budget):
        standings = self.context.get("standing") or budgets.standing([budget])
        return StandingSerializer(standings[budget.pk]).data
