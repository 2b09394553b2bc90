"""An engine's LoRA adapters over the native API: /api/engines/<name>/adapters/<adapter>/. Viewers
read; operators and admins add, change and remove (each change audited on the engine by the services)."""

from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import permissions, viewsets
from rest_framework.exceptions import NotFound

from accounts.audit import Actor
from accounts.permissions import RolePermission
from engines import selectors, services
from engines.models import Adapter, Engine
from engines.serializers import AdapterSerializer


class EnginePartPermission(RolePermission):
    """An adapter is part of its engine: reading it needs view_engine, any change change_engine."""

    def get_required_permissions(self, method, model_cls):
        return ["engines.view_engine"] if method in permissions.SAFE_METHODS else ["engines.change_engine"]


@extend_schema_view(**{
    name: extend_schema(parameters=[OpenApiParameter("engine_name", str, OpenApiParameter.PATH)])
    for name in ("list", "create", "retrieve", "update", "partial_update", "destroy")
})
class AdapterViewSet(viewsets.ModelViewSet):
    """An engine's adapters (a plain list: an engine has a few), by name."""

    serializer_class = AdapterSerializer
    permission_classes = [EnginePartPermission]
    pagination_class = None
    lookup_field = "name"

    def engine(self):
        if not hasattr(self, "_engine"):
            name = self.kwargs["engine_name"]
            self._engine = Engine.objects.filter(name=name).first()
            if self._engine is None:
                raise NotFound(f"No engine named '{name}'.")
        return self._engine

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # the schema generator has no engine
            return Adapter.objects.none()
        return selectors.adapter_list(engine=self.engine())

    def get_serializer_context(self):
        context = super().get_serializer_context()
        if not getattr(self, "swagger_fake_view", False):
            context["engine"] = self.engine()
        return context

    def perform_create(self, serializer):
        serializer.instance = services.adapter_add(
            actor=Actor.from_request(self.request), engine=self.engine(), **serializer.validated_data)

    def perform_update(self, serializer):
        serializer.instance = services.adapter_update(
            actor=Actor.from_request(self.request), adapter=serializer.instance, **serializer.validated_data)

    def perform_destroy(self, instance):
        services.adapter_remove(actor=Actor.from_request(self.request), adapter=instance)
