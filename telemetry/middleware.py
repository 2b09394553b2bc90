import re
import time

from core.middleware import DualModeMiddleware
from telemetry import error_log as errors
from telemetry import metrics

_NAMED_GROUP = re.compile(r"\(\?P<(\w+)>[^)]*\)")


def endpoint_of(request):
    """The route pattern (`/v1/chat/completions`, `/api/engines/<name>/`), never the raw path: one
    series per route, whatever ids or junk clients send."""
    match = getattr(request, "resolver_match", None)
    if match is None or not match.route:
        return "unmatched"
    route = _NAMED_GROUP.sub(r"<\1>", match.route).replace("/?", "/").replace("^", "").replace("$", "")
    return "/" + route


class RequestMetricsMiddleware(DualModeMiddleware):
    """Count and time every response by route and status; remember the errors for /errors/summary."""

    def _observe(self, request, response, started):
        endpoint = endpoint_of(request)
        metrics.HTTP_REQUESTS.labels(endpoint, request.method, str(response.status_code)).inc()
        metrics.HTTP_LATENCY.labels(endpoint, request.method).observe(time.perf_counter() - started)
        if response.status_code >= 400:
            errors.remember(request, response, endpoint)

    def call(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        self._observe(request, response, started)
        return response

    async def __acall__(self, request):
        started = time.perf_counter()
        response = await self.get_response(request)
        self._observe(request, response, started)
        return response
