"""Alert rules, receivers and silences in and out of the API. Unknown fields are an error (a typo
should say so); the rules of each are its model's, applied by the services."""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from alerts import notify
from alerts.models import LABEL_NAME, RESERVED_LABELS, AlertReceiver, AlertRule, AlertSilence
from core.serializers import StrictInput
from telemetry.series import SERIES

# The JSON fields, which their model's clean() checks: these classes give the schema their shape.
TEXTS = {"type": "object", "additionalProperties": {"type": "string"}}


def label_texts(reserved=()):
    """{label name: text}, but the `reserved` names. Said twice: `propertyNames` for JSON Schema's
    readers, `patternProperties` for OpenAPI 3.0's (draft 4: schemathesis ignores propertyNames there)."""
    names = {"type": "string", "pattern": f"^{LABEL_NAME.pattern}$"}
    if reserved:
        names["not"] = {"enum": list(reserved)}
    but = f"(?!(?:{'|'.join(reserved)})$)" if reserved else ""
    return {"type": "object", "propertyNames": names, "additionalProperties": False,
            "patternProperties": {f"^{but}{LABEL_NAME.pattern}$": {"type": "string"}}}


@extend_schema_field(label_texts())
class MatchersField(serializers.JSONField):
    """{label name: value}; which names a series has is the rule's `series`' business (its clean())."""


@extend_schema_field(label_texts(RESERVED_LABELS))
class LabelsField(serializers.JSONField):
    """{label name: value} added to each alert's, but the ones the rule sets itself."""


@extend_schema_field({**TEXTS, "properties": {"summary": {"type": "string", "pattern": r"\S"}},
                      "required": ["summary"]})
class AnnotationsField(serializers.JSONField):
    pass


@extend_schema_field({"type": "array",
                      "items": {"type": "string", "pattern": rf"^(?:\.\.\.|{LABEL_NAME.pattern})$"}})
class GroupByField(serializers.JSONField):
    pass


@extend_schema_field({"type": "array", "minItems": 1, "items": {
    "type": "object", "additionalProperties": False, "required": ["name", "value"], "properties": {
        "name": {"type": "string", "pattern": f"^{LABEL_NAME.pattern}$"}, "value": {"type": "string"},
        "isRegex": {"type": "boolean"}, "isEqual": {"type": "boolean"},
    },
}})
class SilenceMatchersField(serializers.JSONField):
    pass


class AlertRuleSerializer(StrictInput, serializers.ModelSerializer):
    series = serializers.ChoiceField(
        sorted(SERIES), help_text=AlertRule._meta.get_field("series").help_text,
        error_messages={"invalid_choice": f"Unknown series {{input!r}}; known: {', '.join(sorted(SERIES))}."},
    )
    matchers = MatchersField(required=False, help_text=AlertRule._meta.get_field("matchers").help_text)
    labels = LabelsField(required=False)
    annotations = AnnotationsField()

    class Meta:
        model = AlertRule
        fields = [
            "id", "name", "series", "matchers", "comparator", "threshold", "for_seconds", "keep_firing_for_seconds",
            "severity", "labels", "annotations", "enabled", "builtin", "created_at", "updated_at",
        ]
        read_only_fields = ["id", "builtin", "created_at", "updated_at"]


class DeliverySerializer(serializers.Serializer):
    last_attempt_at = serializers.DateTimeField(allow_null=True)
    last_success_at = serializers.DateTimeField(allow_null=True)
    last_error_at = serializers.DateTimeField(allow_null=True)
    last_error = serializers.CharField()
    last_status = serializers.IntegerField(allow_null=True)
    attempts = serializers.IntegerField()
    delivered = serializers.IntegerField()
    failed = serializers.IntegerField()
    failing = serializers.BooleanField()


class AlertReceiverSerializer(StrictInput, serializers.ModelSerializer):
    """`delivery`: the last delivery's outcome (null when Redis does not answer). Roles that may not
    change receivers see only the URL's origin: webhook URLs often carry a secret."""

    delivery = serializers.SerializerMethodField()
    group_by = GroupByField(required=False, help_text=AlertReceiver._meta.get_field("group_by").help_text)

    class Meta:
        model = AlertReceiver
        fields = [
            "id", "name", "url", "enabled", "send_resolved", "group_by", "repeat_interval_seconds", "timeout_seconds",
            "delivery", "created_at", "updated_at",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]

    def to_representation(self, instance):
        data = super().to_representation(instance)
        request = self.context.get("request")
        if request is not None and not request.user.has_perm("monitoring.change_alertreceiver"):
            data["url"] = instance.origin()
        return data

    @extend_schema_field(DeliverySerializer(allow_null=True))
    def get_delivery(self, receiver):
        status = notify.delivery_status(receiver.pk)
        return DeliverySerializer(status).data if status is not None else None


class AlertSilenceSerializer(StrictInput, serializers.ModelSerializer):
    """Matchers as Alertmanager's: [{"name", "value", "isRegex", "isEqual"}]. `state`: pending, active
    or expired."""

    state = serializers.SerializerMethodField()
    matchers = SilenceMatchersField()

    class Meta:
        model = AlertSilence
        fields = ["id", "matchers", "starts_at", "ends_at", "comment", "created_by", "state", "created_at",
                  "updated_at"]
        read_only_fields = ["id", "created_by", "created_at", "updated_at"]
        extra_kwargs = {"starts_at": {"required": False}}

    def get_state(self, silence) -> str:
        return silence.state()
