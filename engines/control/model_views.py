"""The Models page and its API: what the live workers can serve (engines/catalog.py), with Register
prefilling the engine form, and the check of a model before it is saved."""

from django.conf import settings
from django.contrib.auth.decorators import permission_required
from django.shortcuts import render
from django.utils.text import slugify
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.decorators import api_view, permission_classes
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response

from accounts.permissions import ScopePermission
from core.serializers import StrictInput
from engines import catalog
from engines.heartbeats import live_workers
from engines.models import Engine
from engines.serializers import CatalogModelSerializer, ModelCheckSerializer


@permission_required("engines.view_engine", raise_exception=True)
def model_list(request):
    """Every model a live worker can serve, and the engines already registered on each."""
    rows = catalog.models()
    registered: dict[str, list[str]] = {}
    for name, model in Engine.objects.filter(backend=Engine.Backend.LOCAL).values_list("name", "model"):
        registered.setdefault(model, []).append(name)
    for row in rows:
        row["engines"] = registered.get(row["path"], []) + (registered.get(row["name"], [])
                                                             if row["source"] == "hf_cache" else [])
        row["suggested_name"] = slugify(row["name"].rsplit("/", 1)[-1].removesuffix(".gguf"))[:100]
    return render(request, "engines/models.html", {
        "models": rows, "scan_seconds": settings.BLAZE_CATALOG_SECONDS,
        "no_workers": not any(not worker["lost"] for worker in live_workers())})


@extend_schema(operation_id="models_catalog", responses={200: CatalogModelSerializer(many=True)})
@api_view(["GET"])
@permission_classes([ScopePermission])
def catalog_list(request):
    """What the live workers can serve: each model under a worker's models directory or in its Hugging
    Face cache, with its kind, architecture, parameters, size, estimated memory, context length,
    whether it has a chat template, and the workers that have it (and whether it fits each one's cache)."""
    if not request.user.has_perm("engines.view_engine"):
        raise PermissionDenied("Your role does not allow this.")
    return Response(catalog.models())


class InspectSerializer(StrictInput, serializers.Serializer):
    model = serializers.CharField(max_length=500, help_text="A path on the workers, or a hub id.")
    kind = serializers.ChoiceField(Engine.Kind.choices, required=False)


@extend_schema(operation_id="models_inspect", request=InspectSerializer, responses={200: ModelCheckSerializer})
@api_view(["POST"])
@permission_classes([ScopePermission])
def inspect(request):
    """What the live workers find at a model, as saving an engine checks it (no weights loaded): a 400
    naming the field for a path no worker has, another kind of model, or one that fits no worker."""
    if not request.user.has_perm("engines.add_engine"):
        raise PermissionDenied("Your role does not allow this.")
    asked = InspectSerializer(data=request.data, context={"request": request})
    asked.is_valid(raise_exception=True)
    return Response(catalog.inspect(asked.validated_data["model"], asked.validated_data.get("kind")).as_dict())
