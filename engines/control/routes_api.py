"""Routes over the native API: /api/routes/<name>/, its targets under …/targets/, its live state at
…/status/. Viewers read; operators and admins change (every change audited by the services)."""

from django.db.models import Prefetch
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import permissions, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from accounts.audit import Actor
from accounts.permissions import RolePermission
from engines import services
from engines.models import Route, RouteFallback, RouteTarget
from engines.selectors import route_status
from engines.serializers import RouteSerializer, RouteTargetSerializer


class RouteViewSet(viewsets.ModelViewSet):
    """Routes by name: the model a client asks for, spread over targets by a strategy."""

    queryset = Route.objects.prefetch_related(
        "targets__engine", Prefetch("fallbacks", queryset=RouteFallback.objects.select_related("route_fallback",
                                                                                           "engine_fallback")))
    serializer_class = RouteSerializer
    lookup_field = "name"

    def perform_create(self, serializer):
        serializer.instance = services.route_create(actor=Actor.from_request(self.request), **serializer.validated_data)

    def perform_update(self, serializer):
        serializer.instance = services.route_update(
            actor=Actor.from_request(self.request), route=serializer.instance, **serializer.validated_data
        )

    def perform_destroy(self, instance):
        services.route_delete(actor=Actor.from_request(self.request), route=instance)

    @extend_schema(responses=OpenApiTypes.OBJECT)
    @action(detail=True, methods=["get"], url_path="status")
    def live_status(self, request, name=None):
        """Each target: available now (else why not), cached on, in flight, p50/p95 latency, share of
        traffic, error rate, breaker and health states. 503 (targets without numbers) when Redis does
        not answer."""
        status = route_status(self.get_object())
        return Response(status, status=503 if "error" in status else 200)


class RoutePartPermission(RolePermission):
    """A target is part of its route: reading it needs view_route, any change change_route."""

    def get_required_permissions(self, method, model_cls):
        return ["engines.view_route"] if method in permissions.SAFE_METHODS else ["engines.change_route"]


@extend_schema_view(**{
    name: extend_schema(parameters=[OpenApiParameter("route_name", str, OpenApiParameter.PATH)])
    for name in ("list", "create", "retrieve", "update", "partial_update", "destroy", "enable", "disable",
                 "reset_breaker")
})
class RouteTargetViewSet(viewsets.ModelViewSet):
    """A route's targets (a plain list: a route has a few): add, change weight or enabled, remove."""

    serializer_class = RouteTargetSerializer
    permission_classes = [RoutePartPermission]
    pagination_class = None
    lookup_value_regex = "[0-9]+"

    def route(self):
        if not hasattr(self, "_route"):
            name = self.kwargs["route_name"]
            self._route = Route.objects.filter(name=name).first()
            if self._route is None:
                raise NotFound(f"No route named '{name}'.")
        return self._route

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # the schema generator has no route
            return RouteTarget.objects.none()
        return RouteTarget.objects.filter(route=self.route()).select_related("engine", "route")

    def perform_create(self, serializer):
        serializer.instance = services.route_target_add(
            actor=Actor.from_request(self.request), route=self.route(), **serializer.validated_data
        )

    def perform_update(self, serializer):
        serializer.instance = services.route_target_update(
            actor=Actor.from_request(self.request), target=serializer.instance, **serializer.validated_data
        )

    def perform_destroy(self, instance):
        services.route_target_remove(actor=Actor.from_request(self.request), target=instance)

    def _set_enabled(self, request, enabled):
        target = services.route_target_update(
            actor=Actor.from_request(request), target=self.get_object(), enabled=enabled)
        return Response(self.get_serializer(target).data)

    @extend_schema(request=None)
    @action(detail=True, methods=["post"])
    def enable(self, request, route_name=None, pk=None):
        return self._set_enabled(request, True)

    @extend_schema(request=None)
    @action(detail=True, methods=["post"])
    def disable(self, request, route_name=None, pk=None):
        return self._set_enabled(request, False)

    @extend_schema(request=None, responses=OpenApiTypes.OBJECT)
    @action(detail=True, methods=["post"], url_path="reset-breaker")
    def reset_breaker(self, request, route_name=None, pk=None):
        """Close the target's circuit breaker now (audited)."""
        state = services.route_target_reset_breaker(actor=Actor.from_request(request), target=self.get_object())
        return Response({"id": int(pk), "breaker": state})
