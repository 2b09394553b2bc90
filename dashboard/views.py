import json
import re

from django.conf import settings
from django.contrib.auth.decorators import login_required, permission_required
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from prometheus_client import CONTENT_TYPE_LATEST
from rest_framework import serializers as drf_serializers
from rest_framework.decorators import api_view, authentication_classes, permission_classes
from rest_framework.settings import api_settings

from core import tracing
from core.http_errors import error_body
from dashboard import history, live, selectors
from dashboard.permissions import AdminsOnly, MetricsTokenAuthentication, MonitoringAccess
from telemetry import error_log as errors
from telemetry import request_log
from telemetry.series import SERIES

MONITORING_AUTHENTICATION = [MetricsTokenAuthentication, *api_settings.DEFAULT_AUTHENTICATION_CLASSES]


@never_cache
def health(request):
    """Liveness: the process answers. Cheap and unauthenticated, for load balancers."""
    return JsonResponse({"status": "ok"})


@never_cache
@extend_schema(exclude=True)  # operational endpoints, documented in docs/observability.md, not the API schema
@api_view(["GET"])
@authentication_classes(MONITORING_AUTHENTICATION)
@permission_classes([MonitoringAccess])
def health_detailed(request):
    """Database, Redis, disk, workers and engines; 503 when a required dependency is down."""
    report = selectors.health_report()
    return JsonResponse(report, status=503 if report["status"] == "down" else 200)


@never_cache
@extend_schema(exclude=True)  # operational endpoints, documented in docs/observability.md, not the API schema
@api_view(["GET"])
@authentication_classes(MONITORING_AUTHENTICATION)
@permission_classes([MonitoringAccess])
def metrics_prometheus(request):
    """Prometheus text exposition of every live Blaze process on every host, each series labelled with
    its `host` and `process` (telemetry/cluster.py): scrape it once, not once per web process."""
    return HttpResponse(selectors.prometheus_text(), content_type=CONTENT_TYPE_LATEST)


@never_cache
@extend_schema(exclude=True)  # operational endpoints, documented in docs/observability.md, not the API schema
@api_view(["GET"])
@authentication_classes(MONITORING_AUTHENTICATION)
@permission_classes([MonitoringAccess])
def metrics_json(request):
    """The same metrics as JSON, shaped for the dashboard's charts."""
    return JsonResponse(selectors.metrics_snapshot())


@never_cache
@extend_schema(exclude=True)  # operational endpoints, documented in docs/observability.md, not the API schema
@api_view(["GET"])
@permission_classes([AdminsOnly])
def errors_summary(request):
    """Error responses of the last hour (`?since=` seconds, at most a day) grouped by type and route."""
    raw = request.query_params.get("since", "3600")
    if not raw.isdigit() or not 1 <= int(raw) <= 86400:
        return JsonResponse({"error": "since must be a whole number of seconds from 1 to 86400.",
                             "fields": {"since": ["Expected 1 to 86400."]}}, status=400)
    return JsonResponse(errors.summary(int(raw)))


@never_cache
@extend_schema(
    parameters=[
        OpenApiParameter("series", str, enum=sorted(SERIES), required=True, many=True,
                         description="One or more series names (telemetry/series.py): route_latency_p95_seconds."),
        OpenApiParameter("seconds", {"type": "integer", "minimum": 1, "maximum": 86400},
                         description="How far back, 1 to 86400 (default 3600). Past the per-interval points' reach "
                                     "(an hour) the points are per-minute means."),
        *(OpenApiParameter(label, str, description=f"Only this {label}'s series; a label of every series named.")
          for label in sorted({label for series in SERIES.values() for label in series.labels})),
    ],
    responses=inline_serializer("MetricHistory", {"series": drf_serializers.ListField(),
                                                  "events": drf_serializers.ListField()}),
)
@api_view(["GET"])
@authentication_classes(MONITORING_AUTHENTICATION)
@permission_classes([MonitoringAccess])
def metrics_history(request):
    """The live feed's series over the last hour (or day), with the configuration changes of that
    time (audit events) to mark on the charts."""
    params = request.query_params
    names = params.getlist("series")
    if not names:
        return _bad("series", "Name one or more series, e.g. ?series=route_requests_per_second.")
    unknown = [name for name in names if name not in SERIES]
    if unknown:
        return _bad("series", f"Unknown series {unknown[0]!r}; known: {', '.join(sorted(SERIES))}.")
    raw = params.get("seconds", "3600")
    if not raw.isdigit() or not 1 <= int(raw) <= 86400:
        return _bad("seconds", "Expected a whole number of seconds from 1 to 86400.")
    labels = {key: value for key, value in params.items() if key not in ("series", "seconds")}
    allowed = {label for name in names for label in SERIES[name].labels}
    for label in labels:
        if label not in allowed:
            return _bad(label, f"Not a label of these series; they have: {', '.join(sorted(allowed)) or 'none'}.")
    seconds = int(raw)
    series = [entry for name in names for entry in history.read(name, labels, seconds)]
    return JsonResponse({"series": series, "events": selectors.config_events(seconds)})


def _bad(field, message):
    return JsonResponse(error_body(f"{field}: {message}", {field: [message]}), status=400)


@login_required
@permission_required("engines.view_engine", raise_exception=True)
def overview(request):
    """The landing page: the health of everything on one screen and the live charts. The page draws
    the last published snapshot at once (embedded as JSON data, not script), then follows the feed."""
    raw = live.latest()
    return render(request, "monitoring/overview.html", {
        "snapshot": json.loads(raw) if raw else None, "charts": CHARTS,
        "history_url": reverse("api-metrics-history"),
    })


# The overview's time-series charts: (element id, title, series, the label that makes one line each, unit).
CHARTS = [
    ("chart-throughput", "Requests per second, by model asked for", "route_requests_per_second", "route", "req/s"),
    ("chart-errors", "Server errors per second, by model", "route_errors_per_second", "route", "errors/s"),
    ("chart-latency", "Latency p95, by model", "route_latency_p95_seconds", "route", "s"),
    ("chart-latency-p50", "Latency p50, by model", "route_latency_p50_seconds", "route", "s"),
    ("chart-ttft", "Time to first token p95, by engine", "engine_ttft_p95_seconds", "engine", "s"),
    ("chart-itl", "Inter-token latency p95, by engine", "engine_itl_p95_seconds", "engine", "s"),
    ("chart-tokens", "Tokens per second, by engine", "engine_tokens_per_second", "engine", "tok/s"),
    ("chart-batch", "Mean batch size, by engine", "engine_batch_size_mean", "engine", "requests"),
    ("chart-queue", "Queue depth, by engine", "engine_queue_depth", "engine", "requests"),
    ("chart-queue-wait", "Queue wait p95, by engine", "engine_queue_wait_p95_seconds", "engine", "s"),
    ("chart-cpu", "CPU, by worker", "worker_cpu_percent", "worker", "% of a core"),
    ("chart-memory", "Resident memory, by worker", "worker_memory_bytes", "worker", "bytes"),
]


STATUS_FILTER = re.compile(r"^(?:[245]xx|[0-9]{3})?$")


def _request_filters(params):
    return {name: params.get(name, "").strip() for name in ("route", "engine", "status", "client")}


@login_required
@permission_required("engines.view_engine", raise_exception=True)
def requests_page(request):
    """The last requests, newest first, filtered by route, engine, status and client; a row opens its story."""
    filters = _request_filters(request.GET)
    return render(request, "monitoring/requests.html", {
        "entries": request_log.entries(**filters), "filters": filters, "size": settings.BLAZE_REQUEST_LOG_SIZE,
    })


@login_required
@permission_required("engines.view_engine", raise_exception=True)
def request_detail(request, request_id):
    entry = request_log.entry(request_id)
    if entry is None:
        raise Http404("That request is not in the log (it keeps the last requests only).")
    return render(request, "monitoring/request.html",
                  {"entry": entry, "trace_url": tracing.trace_url(entry.get("trace_id"))})


def _count(help_text, **kwargs):
    return drf_serializers.IntegerField(allow_null=True, min_value=0, help_text=help_text, **kwargs)


def _seconds(help_text, **kwargs):
    return drf_serializers.FloatField(allow_null=True, help_text=help_text, **kwargs)


# One entry of the request log (telemetry/request_log.py), as the API returns it; entries written
# before a field existed lack it.
REQUEST_LOG_ENTRY = inline_serializer("RequestLogEntry", {
    "id": drf_serializers.CharField(help_text="The request id (its X-Request-ID)."),
    "t": drf_serializers.FloatField(help_text="When it arrived, Unix seconds."),
    "endpoint": drf_serializers.CharField(),
    "client": drf_serializers.CharField(allow_blank=True, help_text="The API key's label, or the user."),
    "model": drf_serializers.CharField(allow_null=True, help_text="The route or engine asked for."),
    "route": drf_serializers.CharField(allow_null=True),
    "adapter": drf_serializers.CharField(required=False, help_text="The LoRA adapter the engine ran it under."),
    "attempts": drf_serializers.ListField(
        child=drf_serializers.DictField(), help_text="Each target tried: target, engine, worker, outcome, error."),
    "skipped": drf_serializers.DictField(child=drf_serializers.CharField(), help_text="Targets passed over, and why."),
    "status": drf_serializers.IntegerField(allow_null=True),
    "seconds": _seconds("Time to the whole answer."),
    "queue_seconds": _seconds("Time queued for a worker."),
    "ttft_seconds": _seconds("Time to the first token."),
    "tokens": _count("Tokens generated (all choices)."),
    "prompt_tokens": _count("Tokens of the prompt.", required=False),
    "cached_tokens": _count("Prompt tokens the engine's prefix cache supplied instead of computing them "
                            "(usage.prompt_tokens_details.cached_tokens).", required=False),
    "trace_id": drf_serializers.CharField(allow_blank=True, allow_null=True),
    "streamed": drf_serializers.BooleanField(required=False),
    **{text: drf_serializers.CharField(required=False, allow_blank=True, help_text="Only if the route keeps prompts.")
       for text in ("prompt", "answer")},
})


@never_cache
@extend_schema(parameters=[*(OpenApiParameter(name, str) for name in ("route", "engine", "client")),
                           OpenApiParameter("status", {"type": "string", "pattern": STATUS_FILTER.pattern},
                                            description="2xx, 4xx, 5xx or an exact code")],
               responses=inline_serializer("RequestLog", {"requests": drf_serializers.ListField(
                   child=REQUEST_LOG_ENTRY)}))
@api_view(["GET"])
@authentication_classes(MONITORING_AUTHENTICATION)
@permission_classes([MonitoringAccess])
def requests_api(request):
    """The Requests page's entries as JSON (`status`: 2xx, 4xx, 5xx or an exact code)."""
    filters = _request_filters(request.query_params)
    if not STATUS_FILTER.fullmatch(filters["status"]):
        return _bad("status", "Expected 2xx, 4xx, 5xx or a status code such as 503.")
    return JsonResponse({"requests": request_log.entries(**filters)})
