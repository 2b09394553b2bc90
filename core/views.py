"""Error pages: JSON under /api/ and /v1/, HTML elsewhere."""

import sys
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.template.loader import render_to_string

from core.http_errors import OUTAGES, RETRY_AFTER_SECONDS, error_body, outage

API_PREFIXES = ("/api/", "/v1/")


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith(API_PREFIXES)


# OpenAI's error `type` for each status, for refusals under /v1/.
OPENAI_ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "invalid_request_error", 405: "invalid_request_error", 413: "invalid_request_error",
    429: "rate_limit_error", 503: "server_error",
}


def openai_error(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error object: {"message", "type", "param", "code"}."""
    return {"message": message, "type": OPENAI_ERROR_TYPES.get(status, "server_error"), "param": param, "code": code}


def refusal(request: HttpRequest, status: int, message: str, *, param: str | None = None, code: str | None = None,
            headers: dict[str, str] | None = None) -> HttpResponse:
    """A refusal made before any view runs (middleware): OpenAI's error shape under /v1/, the native
    `{"error", "fields"}` under /api/, a short standalone page elsewhere (no session or user needed)."""
    if request.path.startswith("/v1/"):
        response = JsonResponse({"error": openai_error(status, message, param, code)}, status=status)
    elif _is_api(request):
        response = JsonResponse(error_body(message, {param: [message]} if param else None), status=status)
    else:
        html = render_to_string("refusal.html", {"status": status, "message": message})
        response = HttpResponse(html, status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        return JsonResponse(error_body(f"No such endpoint: {request.path}"), status=404)
    return render(request, "404.html", status=404)


def forbidden(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        return JsonResponse(error_body("You do not have permission to do this."), status=403)
    if not request.user.is_authenticated:
        # Pages refuse with 403 (permission_required(raise_exception=True)); a visitor may only need to sign in.
        return redirect_to_login(request.get_full_path())
    return render(request, "403.html", status=403)


def server_error(request: HttpRequest) -> HttpResponse:
    """An exception no view or middleware answered. Redis or the database not answering is a 503 that
    says which, and when to try again (Django keeps the exception current here, in sync and async
    handlers alike); anything else, a 500."""
    exc = sys.exc_info()[1]
    if isinstance(exc, OUTAGES):
        return refusal(request, 503, outage(exc).message, code=outage(exc).code,
                       headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    if _is_api(request):
        return JsonResponse(error_body("Internal error; the X-Request-ID header finds it in the logs."), status=500)
    return render(request, "500.html", status=500)
