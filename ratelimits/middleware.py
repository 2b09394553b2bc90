"""Every request (but health checks, static files and metrics) is counted against the enabled policies
that match its path (`admission`). Over a limit: 429 with Retry-After and X-RateLimit-*, or, for a
delay policy, a wait for its turn. Admitted requests carry X-RateLimit-* of the tightest policy."""

import math

from core.middleware import DualModeMiddleware
from core.views import refusal

from . import admission

# Never limited: probes and scrapers, and the way back for an operator whose policy is too tight
# (signing in — guarded by the login lockout — and the rate-limit pages themselves).
EXEMPT_PREFIXES = ("/health", "/static/", "/metrics", "/login/", "/ratelimits/", "/api/ratelimits/")


def _headers(decision):
    return {
        "X-RateLimit-Limit": str(decision.limit),
        "X-RateLimit-Remaining": str(decision.remaining),
        "X-RateLimit-Reset": str(math.ceil(decision.reset)),
    }


def _refused(request, verdict):
    return refusal(request, 429, verdict.message, code="rate_limit_exceeded",
                   headers={**_headers(verdict.decision), "Retry-After": str(verdict.retry_after)})


def _admitted(response, verdict):
    if verdict.decision is not None:
        for name, value in _headers(verdict.decision).items():
            response[name] = value
    return response


class RateLimitMiddleware(DualModeMiddleware):
    def call(self, request):
        if request.path.startswith(EXEMPT_PREFIXES):
            return self.get_response(request)
        verdict = admission.verdict(request, lambda: request.user)
        if verdict.refused_by is not None:
            return _refused(request, verdict)
        return _admitted(self.get_response(request), verdict)

    async def __acall__(self, request):
        if request.path.startswith(EXEMPT_PREFIXES):
            return await self.get_response(request)

        async def user_of():
            # /v1 runs without the session's sign-in (blaze_site.asgi): its callers count by credential.
            return await request.auser() if hasattr(request, "auser") else None

        verdict = await admission.averdict(request, user_of)
        if verdict.refused_by is not None:
            return _refused(request, verdict)
        return _admitted(await self.get_response(request), verdict)
