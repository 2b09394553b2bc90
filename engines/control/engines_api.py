from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response

from accounts.audit import Actor
from engines import services
from engines.models import Engine
from engines.serializers import EngineSerializer


class EngineViewSet(viewsets.ModelViewSet):
    """Engines: viewers read, operators create, edit, enable/disable, unload and delete."""

    queryset = Engine.objects.all()
    serializer_class = EngineSerializer
    lookup_field = "name"

    def perform_create(self, serializer):
        serializer.instance = services.engine_create(
            actor=Actor.from_request(self.request), **serializer.validated_data)

    def perform_update(self, serializer):
        serializer.instance = services.engine_update(
            actor=Actor.from_request(self.request), engine=serializer.instance, **serializer.validated_data
        )

    def perform_destroy(self, instance):
        services.engine_delete(actor=Actor.from_request(self.request), engine=instance)

    def _set_enabled(self, request, enabled):
        engine = services.engine_set_enabled(
            actor=Actor.from_request(request), engine=self.get_object(), enabled=enabled)
        return Response(self.get_serializer(engine).data)

    @extend_schema(request=None)
    @action(detail=True, methods=["post"])
    def enable(self, request, name=None):
        return self._set_enabled(request, True)

    @extend_schema(request=None)
    @action(detail=True, methods=["post"])
    def disable(self, request, name=None):
        return self._set_enabled(request, False)

    @extend_schema(request=None, responses=inline_serializer("Unloaded", {
        "workers": serializers.ListField(child=serializers.CharField(), help_text="The workers that held it.")}))
    @action(detail=True, methods=["post"])
    def unload(self, request, name=None):
        """Unload the engine's model from every worker now; the next request loads it again."""
        if not request.user.has_perm("engines.manage_cache"):
            raise PermissionDenied("Your role does not allow this.")
        engine = self.get_object()
        return Response({"workers": services.engine_unload_everywhere(actor=Actor.from_request(request),
                                                                      engine=engine)})
