from datetime import UTC, datetime

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import RequestDataTooBig

from accounts.audit import Actor, client_ip
from core import lookups
from core.middleware import DualModeMiddleware
from core.views import refusal
from telemetry import metrics

from . import blocklist, services
from .detection import detect

# Health checks are never blocked: liveness answers anyone without asking Redis or the database (load
# balancers must learn whether the process is up whatever its dependencies do, and a blocked client
# learns nothing from it); detailed health is the monitoring system's, which its own credential or
# address admits (dashboard.permissions).
UNBLOCKABLE_PATHS = {"/health", "/health/detailed"}


class ThreatProtectionMiddleware(DualModeMiddleware):
    """Refuse, before sessions or the database: a blocked address (403), a body over
    BLAZE_MAX_REQUEST_BYTES (413), a path, query string or JSON body that looks like an attack (400,
    recorded by `services.record_detection`).

    The hot path reads one Redis key, the lookup token (kept on the request for the rest of it: /v1
    looks its keys and plans up under the same token), and this process's copy of the block list; the
    database is touched only to read the list again after a change and to record a detection, through
    sync_to_async on the async path.
    """

    def call(self, request):
        blocks = ()
        if request.path not in UNBLOCKABLE_PATHS:
            request.lookups_generation = lookups.current_generation()
            blocks = blocklist.entries(request.lookups_generation)
        response, detection = self._screen(request, blocks)
        if detection is not None:
            services.record_detection(**self._detection_record(request, detection))
        return response or self.get_response(request)

    async def __acall__(self, request):
        blocks = ()
        if request.path not in UNBLOCKABLE_PATHS:
            request.lookups_generation = await lookups.generation()
            blocks = await blocklist.aentries(request.lookups_generation)
        response, detection = self._screen(request, blocks)
        if detection is not None:
            await sync_to_async(services.record_detection)(**self._detection_record(request, detection))
        return response or await self.get_response(request)

    def _screen(self, request, blocks):
        """(refusal or None, detection to record or None)."""
        ip = client_ip(request)
        block = blocklist.block_for(blocks, ip)
        if block is not None:
            metrics.SECURITY_EVENTS.labels("blocked_request").inc()
            when = (
                f"until {datetime.fromtimestamp(block.expires_at, UTC):%Y-%m-%d %H:%M:%S} UTC" if block.expires_at
                else "until an administrator lifts the block"
            )
            return refusal(request, 403, f"Requests from {ip} are blocked {when}.", code="ip_blocked"), None
        body, too_big = self._body(request)
        if too_big:
            metrics.SECURITY_EVENTS.labels("oversize").inc()
            limit = settings.BLAZE_MAX_REQUEST_BYTES
            in_mib = f" ({limit / 2**20:g} MiB)" if limit >= 2**20 else ""
            message = f"The request body is larger than the limit of {limit} bytes{in_mib}."
            return refusal(request, 413, message, code="request_too_large"), None
        detection = detect(request, body)
        if detection is not None:
            return refusal(request, 400, detection.message, param=detection.param, code="threat_detected"), detection
        return None, None

    def _body(self, request):
        """(body bytes, whether it is over the limit). The declared Content-Length is checked first;
        then the body actually received (a chunked body declares none). Multipart bodies (uploads)
        are left to Django's parser, which reads no more than Content-Length."""
        limit = settings.BLAZE_MAX_REQUEST_BYTES
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        if declared > limit:
            return b"", True
        if request.content_type == "multipart/form-data":
            return b"", False
        try:
            body = request.body
        except RequestDataTooBig:
            return b"", True
        return body, len(body) > limit

    def _detection_record(self, request, detection):
        return {
            "actor": Actor.from_request(request), "detection": detection,
            "method": request.method, "path": request.path[:250],
        }
