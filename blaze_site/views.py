"""Error pages: JSON under /api/ and /v1/, HTML elsewhere."""

from django.contrib.auth.views import redirect_to_login
from django.http import JsonResponse
from django.shortcuts import render

from .exceptions import error_body

API_PREFIXES = ("/api/", "/v1/")


def _is_api(request):
    return request.path.startswith(API_PREFIXES)


def not_found(request, exception=None):
    if _is_api(request):
        return JsonResponse(error_body(f"No such endpoint: {request.path}"), status=404)
    return render(request, "404.html", status=404)


def forbidden(request, exception=None):
    if _is_api(request):
        return JsonResponse(error_body("You do not have permission to do this."), status=403)
    if not request.user.is_authenticated:
        # Pages refuse with 403 (permission_required(raise_exception=True)); a visitor may only need to sign in.
        return redirect_to_login(request.get_full_path())
    return render(request, "403.html", status=403)


def server_error(request):
    if _is_api(request):
        return JsonResponse(error_body("Internal error; the X-Request-ID header finds it in the logs."), status=500)
    return render(request, "500.html", status=500)
