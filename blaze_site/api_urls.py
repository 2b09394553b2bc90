from django.urls import path
from rest_framework.routers import SimpleRouter
from rest_framework_simplejwt.views import TokenRefreshView

from accounts import api
from dashboard import views as monitoring_views
from engines.control import model_views, workers_api
from engines.control.adapters_api import AdapterViewSet
from engines.control.engines_api import EngineViewSet
from engines.control.routes_api import RouteTargetViewSet, RouteViewSet

router = SimpleRouter(trailing_slash="/?")
router.register("engines", EngineViewSet, basename="engine")
router.register(r"engines/(?P<engine_name>[-a-zA-Z0-9_]+)/adapters", AdapterViewSet, basename="engine-adapter")
router.register("routes", RouteViewSet, basename="route")
router.register(r"routes/(?P<route_name>[-a-zA-Z0-9_]+)/targets", RouteTargetViewSet, basename="route-target")
router.register("keys", api.ApiKeyViewSet, basename="apikey")
router.register("users", api.UserViewSet, basename="user")
router.register("teams", api.TeamViewSet, basename="team")

urlpatterns = [
    path("me/", api.me, name="api-me"),
    path("audit/", api.AuditEventList.as_view(), name="api-audit"),
    path("token/", api.jwt_obtain, name="api-jwt"),
    path("token/refresh/", TokenRefreshView.as_view(parser_classes=api.CREDENTIAL_PARSERS), name="api-jwt-refresh"),
    path("auth/token/", api.token_obtain, name="api-token"),
    path("workers/", workers_api.worker_list, name="api-workers"),
    path("models/", model_views.catalog_list, name="api-models"),
    path("models/inspect/", model_views.inspect, name="api-models-inspect"),
    path("models/downloads/", model_views.download_list, name="api-model-downloads"),
    path("models/downloads/<str:download_id>/", model_views.download_detail, name="api-model-download"),
    path("models/downloads/<str:download_id>/cancel/", model_views.download_cancel, name="api-model-download-cancel"),
    path("workers/<str:worker_id>/", workers_api.worker_detail, name="api-worker"),
    path("workers/<str:worker_id>/cache/", workers_api.worker_cache, name="api-worker-cache"),
    path("metrics/history/", monitoring_views.metrics_history, name="api-metrics-history"),
    path("requests/", monitoring_views.requests_api, name="api-requests"),
    *router.urls,
]
