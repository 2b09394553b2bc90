import re
import uuid

from asgiref.sync import sync_to_async
from django.shortcuts import redirect
from django.urls import reverse

from core import logs
from core.middleware import DualModeMiddleware

from .selectors import mfa_required_for

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")


class RequestIdMiddleware(DualModeMiddleware):
    """Accept a well-formed `X-Request-ID` or make one; echo it on the response and stamp it on every
    log line (and Celery task) of the request."""

    def _tag(self, request):
        incoming = request.headers.get("X-Request-ID", "")
        request.request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        # Not reset after the response: Django logs the response's status after the last middleware
        # returns, and that line must carry the id too. The next request sets its own.
        logs.request_id.set(request.request_id)

    def call(self, request):
        self._tag(request)
        response = self.get_response(request)
        response["X-Request-ID"] = request.request_id
        return response

    async def __acall__(self, request):
        self._tag(request)
        response = await self.get_response(request)
        response["X-Request-ID"] = request.request_id
        return response


class MfaRequiredMiddleware(DualModeMiddleware):
    """Send a signed-in browser user whose role requires TOTP to enrolment until they have verified."""

    ALLOWED = ("account", "mfa_enrol", "mfa_confirm", "logout", "login")
    def _applies(self, request):
        return not request.path.startswith(("/static/", "/api/", "/v1/", "/health", "/metrics"))

    def _must_enrol(self, request):
        user = request.user
        return (
            user.is_authenticated and not user.is_verified()
            and request.path not in {reverse(name) for name in self.ALLOWED} and mfa_required_for(user)
        )

    def call(self, request):
        if self._applies(request) and self._must_enrol(request):
            return redirect("account")
        return self.get_response(request)

    async def __acall__(self, request):
        if self._applies(request) and await sync_to_async(self._must_enrol)(request):
            return redirect("account")
        return await self.get_response(request)
