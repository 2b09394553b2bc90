"""A base for Blaze's own middleware, and Django's SecurityMiddleware (for /v1's chain) and django-csp's
middleware without the thread hops they take when served async.

Django's MiddlewareMixin runs `process_request` and `process_response` through sync_to_async
(thread-sensitive) when daphne serves a request: two trips to the one sync thread, which cost more
than the work itself. SecurityMiddleware's hooks only read settings and set headers (or redirect to
HTTPS), so its async path here calls them inline. The browser's chain keeps Django's own class, which
`manage.py check --deploy` looks for by name.
"""

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from csp.middleware import CSPMiddleware
from django.http import HttpRequest, HttpResponse
from django.middleware import security


class DualModeMiddleware:
    """Middleware for a sync and an async chain alike, Django's idiom written once: a subclass
    defines `call(request)` for the sync chain and `async __acall__(request)` for the async one, and
    Django builds it for whichever its chain is."""

    sync_capable = async_capable = True
    call: Callable[[HttpRequest], HttpResponse]  # the subclass's
    __acall__: Callable[[HttpRequest], Awaitable[HttpResponse]]  # the subclass's

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if iscoroutinefunction(self.get_response):  # as __init__ marked this instance
            return self.__acall__(request)
        return self.call(request)


class SecurityMiddleware(security.SecurityMiddleware):
    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        response = self.process_request(request) or await self.get_response(request)
        return self.process_response(request, response)


class ContentSecurityPolicyMiddleware(CSPMiddleware):
    """django-csp's middleware (settings.CONTENT_SECURITY_POLICY) with its hooks called inline when
    served async, as SecurityMiddleware's above: they only build a header."""

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        self.process_request(request)
        return self.process_response(request, await self.get_response(request))
