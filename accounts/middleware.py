import re
import uuid

from django.shortcuts import redirect
from django.urls import reverse

from .selectors import mfa_required_for

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")


class RequestIdMiddleware:
    """Accept a well-formed `X-Request-ID` or make one; echo it on the response."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.headers.get("X-Request-ID", "")
        request.request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        response = self.get_response(request)
        response["X-Request-ID"] = request.request_id
        return response


class MfaRequiredMiddleware:
    """Send a signed-in browser user whose role requires TOTP to enrolment until they have verified."""

    ALLOWED = ("account", "mfa_enrol", "mfa_confirm", "logout", "login")

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = request.user
        if (
            user.is_authenticated
            and not user.is_verified()
            and not request.path.startswith(("/static/", "/api/", "/v1/"))
            and request.path not in {reverse(name) for name in self.ALLOWED}
            and mfa_required_for(user)
        ):
            return redirect("account")
        return self.get_response(request)
