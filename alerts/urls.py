"""The alerting API, included at api/alerts/ (paths here are relative to it)."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from alerts import api as alerts_api

router = SimpleRouter(trailing_slash="/?")
router.register("rules", alerts_api.AlertRuleViewSet, basename="alert-rule")
router.register("receivers", alerts_api.AlertReceiverViewSet, basename="alert-receiver")
router.register("silences", alerts_api.AlertSilenceViewSet, basename="alert-silence")

urlpatterns = [
    path("", alerts_api.alert_list, name="api-alerts"),
    path("pack/", alerts_api.alert_pack, name="api-alert-pack"),
    *router.urls,
]
