"""What daphne serves (blaze_site.asgi.application): /v1 on its own, shorter middleware chain, which
still stamps request ids and applies the block list, the threat screen and rate limits; every other
path on the browser's chain."""

import asyncio
import gc
import json
import time

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.core.signals import request_started
from django.db import close_old_connections, connections

from accounts.audit import Actor
from accounts.services import api_key_create
from blaze_site.asgi import application
from engines.models import Engine, Route, RouteTarget
from ratelimits import services as ratelimit_services
from security import services as security_services
from tests.conftest import make_user


def http_scope(method, path, body, headers, ip="203.0.113.9"):
    """The ASGI scope daphne makes for one request; `headers`: (name, value) pairs besides Host and
    Content-Length."""
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "client": (ip, 40000), "server": ("testserver", 80),
        "headers": [(name.lower().encode(), value.encode()) for name, value in
                    {"host": "testserver", "content-length": str(len(body)), **dict(headers)}.items()],
    }


def call(method, path, body=b"", headers=None, ip="203.0.113.9"):
    """(status, {header: value}, body) of one request through the application, as daphne sends it."""
    scope = http_scope(method, path, body, (headers or {}).items(), ip)
    messages, received = [], []

    async def receive():
        if not received:
            received.append(True)
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client stays connected

    async def send(message):
        messages.append(message)

    # As Django's test client does: the handler must not close the connection holding the test's transaction.
    request_started.disconnect(close_old_connections)
    try:
        async_to_sync(application)(scope, receive, send)
    finally:
        request_started.connect(close_old_connections)
    start = next(m for m in messages if m["type"] == "http.response.start")
    headers = {}
    for name, value in start["headers"]:
        headers.setdefault(name.decode().lower(), []).append(value.decode())
    content = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return start["status"], headers, content


@pytest.fixture
def key(db):
    _, raw = api_key_create(actor=Actor.system("test"), user=make_user("app", "viewer"), name="app",
                            scopes=["inference"])
    return {"Authorization": f"Bearer {raw}"}


def test_v1_answers_with_the_request_id_and_no_session(key):
    status, headers, body = call("GET", "/v1/models", headers={**key, "X-Request-ID": "trace-42"})
    assert status == 200 and json.loads(body)["object"] == "list"
    assert headers["x-request-id"] == ["trace-42"]
    assert headers["x-content-type-options"] == ["nosniff"]
    assert "set-cookie" not in headers


def test_v1_is_screened_for_attacks(key):
    # Prompts are free text; the other fields are not.
    attack = json.dumps({"model": "x", "messages": [{"role": "user", "content": "<script> is fine here"}],
                         "user": "<script>alert(1)</script>"})
    status, _, body = call("POST", "/v1/chat/completions", attack.encode(),
                           headers={**key, "Content-Type": "application/json"})
    error = json.loads(body)["error"]
    assert status == 400 and (error["code"], error["param"]) == ("threat_detected", "user")


def test_v1_refuses_blocked_addresses(key):
    security_services.ip_block(actor=Actor.system("test"), network="198.51.100.0/24", reason="test")
    status, _, body = call("GET", "/v1/models", headers=key, ip="198.51.100.7")
    assert status == 403 and json.loads(body)["error"]["code"] == "ip_blocked"


def test_v1_is_rate_limited_per_key(key, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        ratelimit_services.policy_create(actor=Actor.system("test"), name="v1", scope="api_key", endpoint="/v1/",
                                         algorithm="fixed_window", limit=1, period_seconds=60)
    assert call("GET", "/v1/models", headers=key)[0] == 200
    status, headers, body = call("GET", "/v1/models", headers=key)
    assert status == 429 and "retry-after" in headers
    assert json.loads(body)["error"]["code"] == "rate_limit_exceeded"


def test_a_route_without_redis_is_a_503_that_names_it(key, settings):
    engine = Engine.objects.create(name="far", kind="llm", backend="remote", base_url="http://127.0.0.1:9/v1")
    RouteTarget.objects.create(route=Route.objects.create(name="chat"), engine=engine)
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    body = json.dumps({"model": "chat", "messages": [{"role": "user", "content": "hi"}]}).encode()
    status, _, answer = call("POST", "/v1/chat/completions", body, headers={**key, "Content-Type": "application/json"})
    error = json.loads(answer)["error"]
    assert status == 503 and error["code"] == "no_target_available"
    assert error["message"] == "Route 'chat' cannot pick a target: Blaze's shared state (Redis) is unreachable."


def test_pages_keep_the_browser_chain(db):
    status, headers, _ = call("GET", "/login/")
    assert status == 200
    assert headers["x-frame-options"] == ["DENY"]
    assert any(cookie.startswith("csrftoken=") for cookie in headers["set-cookie"])


async def served(path, body=b"{}", headers=()):
    """The status of one request through the application as daphne runs it: on its loop, with no
    async_to_sync around it, and the client gone once the response is sent."""
    scope = http_scope("POST", path, body, headers)
    messages, answered = [], asyncio.Event()

    async def receive():
        if not messages:
            messages.append("sent")
            return {"type": "http.request", "body": body, "more_body": False}
        await answered.wait()
        return {"type": "http.disconnect"}  # as daphne says once the response is sent

    async def send(message):
        messages.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            answered.set()

    await application(scope, receive, send)
    return next(m for m in messages if isinstance(m, dict) and m["type"] == "http.response.start")["status"]


@pytest.mark.django_db(transaction=True)
def test_a_v1_request_starts_no_thread_of_its_own(monkeypatch):
    """Django opens a ThreadSensitiveContext per request, whose first synchronous call (the
    request_started signal's receivers, on every request) starts a new thread while the event loop
    waits; /v1's handler uses the process's one sync thread instead."""
    import threading

    def request():
        return served("/v1/embeddings")

    started = []

    async def requests():
        first = await request()  # may start the process's sync thread, and connect to Redis
        original = threading.Thread.start
        monkeypatch.setattr(threading.Thread, "start",
                            lambda thread: (started.append(thread.name), original(thread))[1])
        statuses = [first] + [await request() for _ in range(3)]
        return statuses, list(started)  # before asyncio.run's own shutdown thread

    assert asyncio.run(requests()) == ([401, 401, 401, 401], [])


@pytest.mark.django_db(transaction=True)
def test_a_v1_request_served_from_cached_lookups_waits_on_no_sync_thread(monkeypatch):
    """A route's request, once the key and the plan are cached, makes no trip to a thread: Django's
    handler would hand request_started and request_finished to the sync thread on every request, and
    the route's pick went to the thread pool. /v1's handler tidies the sync thread's database
    connections at most once a second instead, and still does so."""
    from asgiref.sync import SyncToAsync

    from blaze_site.asgi import api_asgi_app
    from engines import services as engine_services
    from engines.serving.resilience.http import aclose_all
    from tests.upstream import OpenAIUpstream

    upstream = OpenAIUpstream()
    actor = Actor.system("test")
    far = engine_services.engine_create(actor=actor, name="far", kind="llm", backend="remote", model="up",
                                        base_url=upstream.base_url("ok"))
    engine_services.route_target_add(actor=actor, route=engine_services.route_create(actor=actor, name="chat"),
                                     engine=far)
    _, raw = api_key_create(actor=actor, user=make_user("app", "viewer"), name="app", scopes=["inference"])
    headers = [("Authorization", f"Bearer {raw}"), ("Content-Type", "application/json")]
    chat = json.dumps({"model": "chat", "messages": [{"role": "user", "content": "Hi"}]}).encode()
    trips = []
    original = SyncToAsync.__call__

    async def counted(self, *args, **kwargs):
        trips.append(getattr(self.func, "__name__", repr(self.func)))
        return await original(self, *args, **kwargs)

    async def requests():
        first = await served("/v1/chat/completions", chat, headers)  # looks the key and the plan up
        api_asgi_app._tidy_at = time.monotonic() + 3600  # the next responses fall within the tidy's second
        monkeypatch.setattr(SyncToAsync, "__call__", counted)
        statuses = [first] + [await served("/v1/chat/completions", chat, headers) for _ in range(3)]
        cached_trips = list(trips)
        api_asgi_app._tidy_at = 0  # a second later: the next response tidies the sync thread's connections
        statuses.append(await served("/v1/chat/completions", chat, headers))
        await aclose_all()
        return statuses, cached_trips, trips[len(cached_trips):]

    try:
        statuses, cached_trips, later_trips = asyncio.run(requests())
    finally:
        upstream.stop()
    assert statuses == [200] * 5 and upstream.hits["ok"] == 5
    assert cached_trips == []
    assert later_trips == ["close_old_connections"]


@pytest.mark.django_db(transaction=True)
def test_a_v1_request_leaves_no_cycle_of_the_handler_to_the_garbage_collector():
    """Daphne ends every request by telling the application that the client has gone. Raised through
    the handler's frame, that news tied the frame, the task and the error in a cycle on every request,
    which only the collector's full passes freed: passes that held the loop for about 100 ms every few
    hundred requests under load."""

    async def requests():
        statuses = [await served("/v1/embeddings") for _ in range(3)]
        await sync_to_async(connections.close_all)()  # the sync thread's, before the test database goes
        return statuses

    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection frees is kept in gc.garbage, to be looked at
    try:
        statuses = asyncio.run(requests())
        gc.collect()
        handler_frames = [o for o in gc.garbage if getattr(getattr(o, "f_code", None), "co_name", "") == "handle"]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert statuses == [401] * 3
    assert handler_frames == []


@pytest.mark.django_db(transaction=True)
def test_a_v1_request_reads_the_lookup_token_once(monkeypatch):
    """The block list's middleware reads it; /v1 looks its key and plan up under the same one."""
    from core import lookups

    reads, read = [], lookups.generation

    async def counted():
        reads.append("generation")
        return await read()

    monkeypatch.setattr(lookups, "generation", counted)

    async def request():
        status = await served("/v1/chat/completions", headers=[("Authorization", "Bearer blz_unknown")])
        await sync_to_async(connections.close_all)()
        return status

    assert asyncio.run(request()) == 401
    assert reads == ["generation"]
