"""The alerting API under /api/alerts/: the active alerts, the rules, receivers and silences (viewers
read; operators and admins change, every change audited by the services), and the built-in pack."""

import redis
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import permissions, serializers, viewsets
from rest_framework.decorators import action, api_view, permission_classes
from rest_framework.response import Response

from accounts.audit import Actor
from accounts.permissions import ScopePermission
from alerts import evaluate as alerting
from alerts import services as alert_services
from alerts.models import AlertReceiver, AlertRule, AlertSilence
from alerts.serializers import AlertReceiverSerializer, AlertRuleSerializer, AlertSilenceSerializer

ALERTS_SCHEMA = inline_serializer("Alert", many=True, fields={
    "fingerprint": serializers.CharField(), "rule": serializers.CharField(),
    "state": serializers.ChoiceField(["pending", "firing", "suppressed"]),
    "labels": serializers.DictField(child=serializers.CharField()),
    "annotations": serializers.DictField(child=serializers.CharField()), "value": serializers.FloatField(),
    "activeAt": serializers.CharField(), "startsAt": serializers.CharField(allow_null=True),
    "endsAt": serializers.CharField(), "generatorURL": serializers.URLField(),
    "silencedBy": serializers.ListField(child=serializers.IntegerField()),
})
ALERT_PACK_SCHEMA = inline_serializer("AlertPack", {"created": AlertRuleSerializer(many=True)})


class AlertAccess(ScopePermission):
    """For the views that are not a model's: reading needs a role that sees alert rules, a change one
    that may add them."""

    def has_permission(self, request, view):
        perm = "monitoring.view_alertrule" if request.method in permissions.SAFE_METHODS else "monitoring.add_alertrule"
        return super().has_permission(request, view) and request.user.has_perm(perm)


@extend_schema(operation_id="alerts_list", responses=ALERTS_SCHEMA)
@api_view(["GET"])
@permission_classes([AlertAccess])
def alert_list(request):
    """The pending and firing alerts, firing first; `suppressed` ones are firing but silenced (not
    notified). 503 when Redis does not answer."""
    try:
        return Response(alerting.active_alerts())
    except redis.RedisError:
        return Response({"error": "Redis does not answer; the alerts are unavailable."}, status=503)


@extend_schema(operation_id="alerts_pack_create", request=None,
               responses={201: ALERT_PACK_SCHEMA, 200: ALERT_PACK_SCHEMA})
@api_view(["POST"])
@permission_classes([AlertAccess])
def alert_pack(request):
    """Switch on the built-in alert pack: its rules that do not exist yet are created (201); with all of
    them there already, nothing changes (200)."""
    created = alert_services.alert_pack_enable(actor=Actor.from_request(request))
    return Response({"created": AlertRuleSerializer(created, many=True).data}, status=201 if created else 200)


class AlertRuleViewSet(viewsets.ModelViewSet):
    """Alert rules by name: a series compared with a threshold, for a while."""

    queryset = AlertRule.objects.all()
    serializer_class = AlertRuleSerializer
    lookup_field = "name"

    def perform_create(self, serializer):
        serializer.instance = alert_services.alert_rule_create(
            actor=Actor.from_request(self.request), **serializer.validated_data)

    def perform_update(self, serializer):
        serializer.instance = alert_services.alert_rule_update(
            actor=Actor.from_request(self.request), rule=serializer.instance, **serializer.validated_data)

    def perform_destroy(self, instance):
        alert_services.alert_rule_delete(actor=Actor.from_request(self.request), rule=instance)


class AlertReceiverViewSet(viewsets.ModelViewSet):
    """Webhooks that get Alertmanager's JSON, each with its last delivery's outcome."""

    queryset = AlertReceiver.objects.all()
    serializer_class = AlertReceiverSerializer
    lookup_value_regex = "[0-9]+"

    def perform_create(self, serializer):
        serializer.instance = alert_services.alert_receiver_create(
            actor=Actor.from_request(self.request), **serializer.validated_data)

    def perform_update(self, serializer):
        serializer.instance = alert_services.alert_receiver_update(
            actor=Actor.from_request(self.request), receiver=serializer.instance, **serializer.validated_data)

    def perform_destroy(self, instance):
        alert_services.alert_receiver_delete(actor=Actor.from_request(self.request), receiver=instance)


class AlertSilenceViewSet(viewsets.ModelViewSet):
    """Silences, newest ending first; `…/expire/` ends one now (as Alertmanager's DELETE does)."""

    queryset = AlertSilence.objects.all()
    serializer_class = AlertSilenceSerializer
    lookup_value_regex = "[0-9]+"

    def perform_create(self, serializer):
        serializer.instance = alert_services.alert_silence_create(
            actor=Actor.from_request(self.request), **serializer.validated_data)

    def perform_update(self, serializer):
        serializer.instance = alert_services.alert_silence_update(
            actor=Actor.from_request(self.request), silence=serializer.instance, **serializer.validated_data)

    def perform_destroy(self, instance):
        alert_services.alert_silence_delete(actor=Actor.from_request(self.request), silence=instance)

    @extend_schema(request=None)
    @action(detail=True, methods=["post"])
    def expire(self, request, pk=None):
        silence = alert_services.alert_silence_expire(actor=Actor.from_request(request), silence=self.get_object())
        return Response(self.get_serializer(silence).data)
