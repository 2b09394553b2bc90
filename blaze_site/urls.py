from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from blaze_site import api_docs
from engines.playground import views as playground_views

urlpatterns = [
    # First: the inference API is most of the traffic, and Django tries the patterns in order (the
    # empty prefixes below hold dozens of pages each).
    path("v1/", include("engines.openai.urls")),
    path("", include("accounts.urls")),
    path("", include("dashboard.urls")),
    path("", include("security.urls")),
    path("", include("ratelimits.urls")),
    path("", include("usage.urls")),
    path("engines/", include("engines.control.urls")),
    path("playground/", playground_views.playground, name="playground"),
    path("alerts/", include("alerts.page_urls")),
    path("api/alerts/", include("alerts.urls")),
    path("api/", include("blaze_site.api_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # Both documentation pages run under the site's Content-Security-Policy (blaze_site/api_docs.py).
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"),
    path("api/redoc/", api_docs.RedocView.as_view(url_name="schema"), name="api-redoc"),
    path("api/redoc/redoc.standalone.js", api_docs.redoc_script, name="api-redoc-script"),
]

handler404 = "core.views.not_found"
handler500 = "core.views.server_error"
handler403 = "core.views.forbidden"
