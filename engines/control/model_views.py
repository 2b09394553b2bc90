"""The Models page and its API: what the live workers can serve (engines/catalog.py), with Register
prefilling the engine form, the check of a model before it is saved, and downloads of models from a
Hugging Face hub onto a worker (engines/downloads.py)."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.shortcuts import redirect, render
from django.utils.text import slugify
from django.views.decorators.http import require_POST
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.decorators import api_view, permission_classes
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.response import Response

from accounts.audit import Actor
from accounts.permissions import ScopePermission
from core import errors
from core.serializers import StrictInput
from engines import catalog, selectors, services
from engines.heartbeats import live_workers
from engines.models import Engine
from engines.serializers import CatalogModelSerializer, DownloadSerializer, ModelCheckSerializer


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
    workers = [worker["id"] for worker in live_workers() if not worker["lost"]]
    return render(request, "engines/models.html", {
        "models": rows, "scan_seconds": settings.BLAZE_CATALOG_SECONDS, "no_workers": not workers,
        "workers": workers, "downloads": selectors.download_list()})


@permission_required("engines.manage_cache", raise_exception=True)
@require_POST
def model_download(request):
    """The Models page's "Download from a hub" form."""
    repo, revision = request.POST.get("repo", "").strip(), request.POST.get("revision", "").strip() or "main"
    try:
        services.download_start(actor=Actor.from_request(request), repo=repo, revision=revision,
                                worker_id=request.POST.get("worker", ""))
        messages.success(request, f"Downloading {repo}@{revision}: its progress is below.")
    except errors.InvalidInput as exc:
        messages.error(request, exc.message)
    return redirect("engines:models")


@permission_required("engines.manage_cache", raise_exception=True)
@require_POST
def model_download_cancel(request, download_id):
    try:
        record = services.download_cancel(actor=Actor.from_request(request), download_id=download_id)
        messages.success(request, f"The download of {record['repo']} is cancelled." if record["state"] == "cancelled"
                         else f"Cancelling the download of {record['repo']}: {record['worker']} stops it at once.")
    except (errors.InvalidInput, errors.NotFound) as exc:
        messages.error(request, exc.message)
    return redirect("engines:models")


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


class DownloadRequestSerializer(StrictInput, serializers.Serializer):
    repo = serializers.CharField(max_length=200, help_text="The hub's repository id, org/name.")
    revision = serializers.CharField(max_length=200, default="main", help_text="A branch, tag or commit.")
    worker = serializers.CharField(max_length=200, help_text="The live worker whose models directory it lands in.")


@extend_schema(methods=["GET"], operation_id="models_downloads_list", responses={200: DownloadSerializer(many=True)})
@extend_schema(methods=["POST"], operation_id="models_downloads_create", request=DownloadRequestSerializer,
               responses={202: DownloadSerializer})
@api_view(["GET", "POST"])
@permission_classes([ScopePermission])
def download_list(request):
    """GET: the model downloads asked for, newest first, with their progress (finished ones are kept a
    day). POST {repo, revision, worker}: a worker fetches the model from its Hugging Face hub
    (HF_ENDPOINT) into BLAZE_MODELS_DIR/<name>, where its catalog lists it once whole: 202 with the
    download, queued; a 400 names the field for a repository id or revision that is not one, a worker
    that is not live, or a model that worker already fetches into the same folder."""
    if not request.user.has_perm("engines.view_engine" if request.method == "GET" else "engines.manage_cache"):
        raise PermissionDenied("Your role does not allow this.")
    if request.method == "GET":
        return Response(selectors.download_list())
    asked = DownloadRequestSerializer(data=request.data, context={"request": request})
    asked.is_valid(raise_exception=True)
    record = services.download_start(actor=Actor.from_request(request), repo=asked.validated_data["repo"],
                                     revision=asked.validated_data["revision"],
                                     worker_id=asked.validated_data["worker"])
    return Response(selectors.download_get(record["id"]) or record, status=202)


def _download_or_404(download_id):
    row = selectors.download_get(download_id)
    if row is None:
        raise NotFound(f"No download {download_id}.")
    return row


@extend_schema(operation_id="models_downloads_retrieve", responses={200: DownloadSerializer})
@api_view(["GET"])
@permission_classes([ScopePermission])
def download_detail(request, download_id):
    """One download and its progress: bytes done of the total, rate, ETA, state, and why it failed."""
    if not request.user.has_perm("engines.view_engine"):
        raise PermissionDenied("Your role does not allow this.")
    return Response(_download_or_404(download_id))


@extend_schema(operation_id="models_downloads_cancel", request=None, responses={200: DownloadSerializer})
@api_view(["POST"])
@permission_classes([ScopePermission])
def download_cancel(request, download_id):
    """Cancel a queued or running download: its worker stops it at its next chunk and deletes what it
    fetched. A 400 for one already over."""
    if not request.user.has_perm("engines.manage_cache"):
        raise PermissionDenied("Your role does not allow this.")
    services.download_cancel(actor=Actor.from_request(request), download_id=download_id)
    return Response(_download_or_404(download_id))
