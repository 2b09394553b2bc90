from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from accounts.audit import Actor

from . import services
from .models import RateLimitPolicy
from .selectors import policy_list, policy_usage
from .serializers import RateLimitPolicySerializer


class RateLimitPolicyViewSet(viewsets.ModelViewSet):
    """Rate-limit policies (operators and admins). Every change is audited and applies to every web
    process within BLAZE_RATELIMIT_POLICY_CACHE_SECONDS. `…/usage/` shows the live counters."""

    queryset = RateLimitPolicy.objects.all()
    serializer_class = RateLimitPolicySerializer
    lookup_value_regex = "[0-9]+"

    def get_queryset(self):
        return policy_list()

    def perform_create(self, serializer):
        serializer.instance = services.policy_create(
            actor=Actor.from_request(self.request), **serializer.validated_data
        )

    def perform_update(self, serializer):
        serializer.instance = services.policy_update(
            actor=Actor.from_request(self.request), policy=serializer.instance, **serializer.validated_data
        )

    def perform_destroy(self, instance):
        services.policy_delete(actor=Actor.from_request(self.request), policy=instance)

    @extend_schema(responses=inline_serializer("RateLimitUsage", {
        "identity": serializers.CharField(), "used": serializers.IntegerField(), "limit": serializers.IntegerField(),
        "remaining": serializers.IntegerField(), "reset": serializers.FloatField(), "factor": serializers.FloatField(),
    }, many=True))
    @action(detail=True, methods=["get"], pagination_class=None)
    def usage(self, request, pk=None):
        usage = policy_usage(self.get_object())
        if usage is None:
            return Response({"error": "Redis does not answer; usage is unavailable."}, status=503)
        return Response(usage)
