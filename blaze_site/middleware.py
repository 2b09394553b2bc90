"""Django's SecurityMiddleware without the thread hops it takes when served async, for /v1's chain.

Django's MiddlewareMixin runs `process_request` and `process_response` through sync_to_async
(thread-sensitive) when daphne serves a request: two trips to the one sync thread, which cost more
than the work itself. SecurityMiddleware's hooks only read settings and set headers (or redirect to
HTTPS), so its async path here calls them inline. The browser's chain keeps Django's own class, which
`manage.py check --deploy` looks for by name.
"""

from django.middleware import security


class SecurityMiddleware(security.SecurityMiddleware):
    async def __acall__(self, request):
        response = self.process_request(request) or await self.get_response(request)
        return self.process_response(request, response)
