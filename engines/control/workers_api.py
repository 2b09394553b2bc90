from drf_spectacular.plumbing import build_array_type, build_basic_type
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.decorators import api_view, permission_classes
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.response import Response

from accounts.audit import Actor
from accounts.permissions import ScopePermission
from core.serializers import StrictInput
from engines import services
from engines.contract import CacheRefusal, RuntimeLoadError
from engines.heartbeats import live_workers, worker_info
from engines.models import Engine


class CacheActionSerializer(StrictInput, serializers.Serializer):
    action = serializers.ChoiceField(["load", "unload", "evict"])
    engine = serializers.SlugField(required=False)

    def validate(self, attrs):
        if attrs["action"] in ("load", "unload") and not attrs.get("engine"):
            raise serializers.ValidationError({"engine": [f"Required to {attrs['action']}."]})
        return attrs


def _require(request, perm):
    if not request.user.has_perm(perm):
        raise PermissionDenied("Your role does not allow this.")


@extend_schema(operation_id="workers_list", responses={200: build_array_type(build_basic_type(OpenApiTypes.OBJECT))})
@api_view(["GET"])
@permission_classes([ScopePermission])
def worker_list(request):
    """Engine hosts seen recently: device, memory, cache contents; `lost` when heartbeats stopped."""
    _require(request, "engines.view_engine")
    return Response(live_workers())


def _worker_or_404(worker_id):
    info = worker_info(worker_id)
    if info is None:
        raise NotFound(f"No worker {worker_id}.")
    return info


@extend_schema(operation_id="workers_retrieve", responses=OpenApiTypes.OBJECT)
@api_view(["GET"])
@permission_classes([ScopePermission])
def worker_detail(request, worker_id):
    _require(request, "engines.view_engine")
    return Response(_worker_or_404(worker_id))


@extend_schema(methods=["GET"], operation_id="workers_cache_retrieve", responses=OpenApiTypes.OBJECT)
@extend_schema(methods=["POST"], operation_id="workers_cache_update", request=CacheActionSerializer,
               responses=OpenApiTypes.OBJECT)
@api_view(["GET", "POST"])
@permission_classes([ScopePermission])
def worker_cache(request, worker_id):
    """GET: the worker's cache. POST {"action": "load"|"unload"|"evict", "engine": name}: change it."""
    _require(request, "engines.view_engine" if request.method == "GET" else "engines.manage_cache")
    info = _worker_or_404(worker_id)  # after the permission: who may not act learns nothing of the worker
    if request.method == "GET":
        return Response({"budget_bytes": info["cache_budget_bytes"], "used_bytes": info["cache_used_bytes"],
                         "models": info["cache"]})
    body = CacheActionSerializer(data=request.data, context={"request": request})
    body.is_valid(raise_exception=True)
    actor, action = Actor.from_request(request), body.validated_data["action"]
    try:
        if action == "load":
            engine = Engine.objects.filter(name=body.validated_data["engine"]).first()
            if engine is None:
                raise serializers.ValidationError({"engine": ["No such engine."]})
            if engine.backend != Engine.Backend.LOCAL:
                raise serializers.ValidationError({"engine": ["A remote engine has no model to load."]})
            result = services.cache_load(actor=actor, worker_id=worker_id, engine=engine)
        elif action == "unload":
            result = {"unloaded": services.cache_unload(actor=actor, worker_id=worker_id,
                                                        engine_name=body.validated_data["engine"])}
        else:
            result = {"evicted": services.cache_evict(actor=actor, worker_id=worker_id)}
    except (RuntimeLoadError, CacheRefusal) as exc:
        raise serializers.ValidationError({"engine": [str(exc)]}) from exc
    return Response(result)
