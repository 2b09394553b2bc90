from django.urls import path
from rest_framework.routers import SimpleRouter

from . import views
from .api import RateLimitPolicyViewSet

app_name = "ratelimits"

router = SimpleRouter(trailing_slash="/?")
router.register("api/ratelimits", RateLimitPolicyViewSet, basename="api")

urlpatterns = [
    path("ratelimits/", views.policy_page, name="list"),
    path("ratelimits/new/", views.policy_create, name="create"),
    path("ratelimits/<int:pk>/", views.policy_edit, name="edit"),
    path("ratelimits/<int:pk>/toggle/", views.policy_toggle, name="toggle"),
    path("ratelimits/<int:pk>/delete/", views.policy_delete, name="delete"),
    *router.urls,
]
