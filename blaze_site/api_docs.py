"""The API's documentation pages under the site's Content-Security-Policy, offline.

Swagger UI is drf-spectacular's split view (its bootstrap script served as a file). ReDoc reads its
options from its tag (templates/api/redoc.html), and its bundle is the sidecar package's with one
change: the attribution logo it would fetch from Redocly's CDN (refused by `img-src`, a console
error on every visit) is an empty image of our own. Written here because ReDoc has no option for it.
"""

import functools

from django.contrib.staticfiles import finders
from django.http import HttpResponse
from django.urls import reverse
from django.views.decorators.cache import cache_control
from drf_spectacular.views import SpectacularRedocView

CDN_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
EMPTY_LOGO = "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' width='1' height='1'/%3E"


@functools.cache
def redoc_bundle():
    path = finders.find("drf_spectacular_sidecar/redoc/bundles/redoc.standalone.js")
    with open(path, encoding="utf-8") as bundle:
        source = bundle.read()
    if CDN_LOGO not in source:
        raise RuntimeError(f"{path} no longer names {CDN_LOGO}: check what it fetches before serving it")
    return source.replace(CDN_LOGO, EMPTY_LOGO)


@cache_control(public=True, max_age=86400)
def redoc_script(request):
    return HttpResponse(redoc_bundle(), content_type="application/javascript; charset=utf-8")


class RedocView(SpectacularRedocView):
    template_name = "api/redoc.html"

    @staticmethod
    def _redoc_standalone():
        return reverse("api-redoc-script")
