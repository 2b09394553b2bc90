"""Fixtures for the security tests, used by name: clients at addresses of their own (so blocks never
touch 127.0.0.1), and a request through the async middleware path."""

import pytest
from asgiref.sync import async_to_sync
from django.test import Client
from django.test.client import AsyncClientHandler, FakePayload

from accounts.models import AuditEvent


@pytest.fixture
def client_at(db):
    """client_at(ip) → a test Client whose requests come from `ip`."""
    return lambda ip: Client(REMOTE_ADDR=ip)


@pytest.fixture
def security_events(db):
    """security_events() → the actions of the security events recorded so far, oldest first."""
    events = AuditEvent.objects.filter(action__startswith="security.").order_by("id")
    return lambda: list(events.values_list("action", flat=True))


@pytest.fixture
def asgi_request(db):
    """asgi_request(method, path, body=b"", headers={}, ip=…) → the response of the async middleware
    chain, as daphne drives it. Sends no Content-Length unless given one, like a chunked request."""

    def send(method, path, body=b"", headers=None, ip="203.0.113.200"):
        scope = {
            "type": "http", "method": method, "path": path, "query_string": b"", "client": (ip, 40000),
            "server": ("testserver", 80), "headers": [
                (name.lower().encode(), value.encode())
                for name, value in {"host": "testserver", **(headers or {})}.items()
            ],
            "_body_file": FakePayload(body),
        }
        return async_to_sync(AsyncClientHandler(enforce_csrf_checks=False))(scope)

    return send
