"""What daphne serves: HTTP through Django — /v1 with its own, shorter middleware chain — and
WebSockets through Channels."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "blaze_site.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs Django set up first)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.handlers.asgi import ASGIHandler  # noqa: E402

from blaze_site.routing import websocket_urlpatterns  # noqa: E402


class ApiHandler(ASGIHandler):
    """Django's ASGI handler with settings.API_MIDDLEWARE in place of settings.MIDDLEWARE, and
    without a ThreadSensitiveContext per request."""

    async def __call__(self, scope, receive, send):
        # Django opens a ThreadSensitiveContext per request: a new executor whose first thread-sensitive
        # call (request_started's receivers, on every request) starts a new thread, while the event
        # loop waits for it to start. /v1's few synchronous calls (a lookup not cached, an image
        # saved) share the process's one sync thread instead, as in async_to_sync code.
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        await self.handle(scope, receive, send)

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
    "http": http_app,
    "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
})
