from django.http import HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from drf_spectacular.utils import extend_schema
from prometheus_client import CONTENT_TYPE_LATEST
from rest_framework.decorators import api_view, authentication_classes, permission_classes
from rest_framework.settings import api_settings

from . import errors, selectors
from .permissions import AdminsOnly, MetricsTokenAuthentication, MonitoringAccess

MONITORING_AUTHENTICATION = [MetricsTokenAuthentication, *api_settings.DEFAULT_AUTHENTICATION_CLASSES]


@never_cache
def health(request):
    """Liveness: the process answers. Cheap and unauthenticated, for load balancers."""
    return JsonResponse({"status": "ok"})


@never_cache
@extend_schema(exclude=True)  # operational endpoints, documented in the README, not the API schema
@api_view(["GET"])
@authentication_classes(MONITORING_AUTHENTICATION)
@permission_classes([MonitoringAccess])
def health_detailed(request):
    """Database, Redis, disk, workers and engines; 503 when a required dependency is down."""
    report = selectors.health_report()
    return JsonResponse(report, status=503 if report["status"] == "down" else 200)


@never_cache
@extend_schema(exclude=True)  # operational endpoints, documented in the README, not the API schema
@api_view(["GET"])
@authentication_classes(MONITORING_AUTHENTICATION)
@permission_classes([MonitoringAccess])
def metrics_prometheus(request):
    """Prometheus text exposition of every web and worker process on this machine."""
    return HttpResponse(selectors.prometheus_text(), content_type=CONTENT_TYPE_LATEST)


@never_cache
@extend_schema(exclude=True)  # operational endpoints, documented in the README, not the API schema
@api_view(["GET"])
@authentication_classes(MONITORING_AUTHENTICATION)
@permission_classes([MonitoringAccess])
def metrics_json(request):
    """The same metrics as JSON, shaped for the dashboard's charts."""
    return JsonResponse(selectors.metrics_snapshot())


@never_cache
@extend_schema(exclude=True)  # operational endpoints, documented in the README, not the API schema
@api_view(["GET"])
@permission_classes([AdminsOnly])
def errors_summary(request):
    """Error responses of the last hour (`?since=` seconds, at most a day) grouped by type and route."""
    raw = request.query_params.get("since", "3600")
    if not raw.isdigit() or not 1 <= int(raw) <= 86400:
        return JsonResponse({"error": "since must be a whole number of seconds from 1 to 86400.",
                             "fields": {"since": ["Expected 1 to 86400."]}}, status=400)
    return JsonResponse(errors.summary(int(raw)))
