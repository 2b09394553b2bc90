"""What daphne serves: HTTP through Django — /v1 with its own, shorter middleware chain — and
WebSockets through Channels."""

import asyncio
import os
import time

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "blaze_site.settings")
django_asgi_app = get_asgi_application()

from asgiref.sync import sync_to_async  # noqa: E402
from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs Django set up first)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.exceptions import RequestAborted  # noqa: E402
from django.core.handlers.asgi import ASGIHandler, get_script_prefix  # noqa: E402
from django.db import close_old_connections  # noqa: E402
from django.urls import set_script_prefix  # noqa: E402

from blaze_site.routing import websocket_urlpatterns  # noqa: E402
from core import tracing  # noqa: E402
from telemetry import cluster  # noqa: E402

tracing.configure("blaze-web")
cluster.start("web")  # this process's metrics, for the cluster's feed and /metrics/prometheus


class ApiHandler(ASGIHandler):
    """Django's ASGI handler with settings.API_MIDDLEWARE in place of settings.MIDDLEWARE, and
    without a trip to a sync thread on every request (see `__call__` and `handle`)."""

    TIDY_SECONDS = 1.0  # at most this long between two tidyings of the sync thread's database connections

    def __init__(self):
        super().__init__()
        self._tidy_at = 0.0

    async def __call__(self, scope, receive, send):
        # Django opens a ThreadSensitiveContext per request: a new executor whose first thread-sensitive
        # call (request_started's receivers, on every request) starts a new thread, while the event
        # loop waits for it to start. /v1's few synchronous calls (a lookup not cached, an image
        # saved) share the process's one sync thread instead, as in async_to_sync code.
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        await self.handle(scope, receive, send)

    async def handle(self, scope, receive, send):
        """Django's handle() (5.2) less its two trips to the sync thread on every request: the
        request_started signal and the response's close() (request_finished). Their receivers tidy the
        database connections of the thread that ran the request's queries: closed after use
        (CONN_MAX_AGE 0) or when broken. /v1 queries only when a lookup is not cached, so that thread
        is tidied once a second at most, after a response, instead (`_tidy`)."""
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        request, response = self.create_request(scope, body_file)
        if request is None:
            body_file.close()
            await self.send_response(response, send)
            response.close()
            return

        async def process_request():
            response = await self.run_get_response(request)
            try:
                await self.send_response(response, send)
            except asyncio.CancelledError:
                pass  # the client went away while the response was sent
            return response

        # As Django does: a client that goes away cancels the view (a local engine's request is withdrawn).
        listening = asyncio.create_task(self.listen_for_disconnect(receive))
        processing = asyncio.create_task(process_request())
        # The tasks' errors are looked at, not raised here, unless they are to propagate: raised through
        # this frame, an error's traceback would hold the frame and the frame the task that holds the
        # error, a cycle on every request (daphne ends each by telling the listener the client is gone)
        # that only the garbage collector's full passes free.
        done, pending = await asyncio.wait([listening, processing], return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        for task in done:
            error = None if task.cancelled() else task.exception()
            if error is not None and not isinstance(error, RequestAborted):
                raise error
        if not processing.cancelled():
            # In this thread: request_finished's receivers find no database connection here to close.
            processing.result().close()
        body_file.close()
        await self._tidy()

    async def _tidy(self):
        if time.monotonic() >= self._tidy_at:
            self._tidy_at = time.monotonic() + self.TIDY_SECONDS
            await sync_to_async(close_old_connections)()

    def load_middleware(self, is_async=False):
        # BaseHandler reads the chain from settings.MIDDLEWARE; this swap happens once, at start-up.
        browser_chain = settings.MIDDLEWARE
        settings.MIDDLEWARE = settings.API_MIDDLEWARE
        try:
            super().load_middleware(is_async)
        finally:
            settings.MIDDLEWARE = browser_chain


api_asgi_app = ApiHandler()


async def http_app(scope, receive, send):
    app = api_asgi_app if scope["path"].startswith("/v1/") else django_asgi_app
    await app(scope, receive, send)


application = ProtocolTypeRouter({
    "http": tracing.asgi(http_app),
    "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
})
