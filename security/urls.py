from django.urls import path
from rest_framework.routers import SimpleRouter

from . import api, views

app_name = "security"

router = SimpleRouter(trailing_slash="/?")
router.register("api/security/blocks", api.IpBlockViewSet, basename="ipblock")

urlpatterns = [
    path("security/status", views.status, name="status"),
    path("security/blocks", views.block, name="block"),
    path("security/blocks/<int:pk>/unblock", views.unblock, name="unblock"),
    path("api/security/status/", api.SecurityStatus.as_view(), name="api-status"),
    *router.urls,
]
