"""Pooled sessions: one per host and event loop, connections kept alive between requests, closed on demand."""

import asyncio
from http.server import BaseHTTPRequestHandler

from engines.serving.resilience import http
from tests.upstream import send_json, serve


def test_one_client_per_host_whatever_the_path(upstream, refused_url):
    async def clients():
        try:
            return (http.client_for(upstream.url + "/v1"), http.client_for(upstream.url + "/other"),
                    http.client_for(refused_url))
        finally:
            await http.aclose_all()

    first, same_host, other_host = asyncio.run(clients())
    assert first is same_host
    assert first is not other_host


def test_requests_to_one_host_reuse_a_kept_alive_connection(upstream):
    path = upstream.path("ok")

    async def twice():
        try:
            for _ in range(2):
                await http.request("GET", upstream.url + path, deadline=5)
        finally:
            await http.aclose_all()

    asyncio.run(twice())
    assert upstream.hits[path] == 2
    assert len(upstream.connections[path]) == 1


def test_aclose_all_closes_the_sessions_and_the_next_request_opens_a_new_one(upstream):
    async def close_and_reopen():
        await http.request("GET", upstream.url + upstream.path("ok"), deadline=5)
        session = http.client_for(upstream.url)
        await http.aclose_all()
        fresh = http.client_for(upstream.url)
        await http.aclose_all()
        return session, fresh

    session, fresh = asyncio.run(close_and_reopen())
    assert session.closed
    assert fresh is not session


def test_each_event_loop_gets_its_own_client(upstream):
    async def client():
        found = http.client_for(upstream.url)
        await http.aclose_all()
        return found

    assert asyncio.run(client()) is not asyncio.run(client())


def test_timeouts_come_from_settings_per_phase(settings):
    settings.BLAZE_UPSTREAM_CONNECT_TIMEOUT, settings.BLAZE_UPSTREAM_READ_TIMEOUT = 2, 120
    settings.BLAZE_UPSTREAM_POOL_TIMEOUT = 5
    timeout = http.timeouts(read=7)
    assert (timeout.sock_connect, timeout.sock_read, timeout.connect, timeout.total) == (2, 7, 5 + 2, None)


def test_a_body_is_read_before_the_answer_is_returned(upstream):
    async def once():
        try:
            response = await http.request("POST", upstream.url + upstream.path("bad"), json={"x": 1}, deadline=5)
            return response.status, await response.read()
        finally:
            await http.aclose_all()

    assert asyncio.run(once()) == (400, b'{"error": "bad request"}')


def test_a_streamed_response_comes_back_unread_for_the_caller_to_read(upstream):
    async def stream():
        try:
            response = await http.request("GET", upstream.url + upstream.path("ok"), deadline=5, stream=True)
            try:
                return [line async for line in response.content]
            finally:
                response.release()
        finally:
            await http.aclose_all()

    assert asyncio.run(stream()) == [b'{"object": "list", "data": []}']



def test_a_form_goes_as_multipart_and_is_sent_whole_again_on_a_retry(settings):
    settings.BLAZE_RETRY_BASE_SECONDS = settings.BLAZE_RETRY_MAX_DELAY_SECONDS = 0.01
    seen = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            seen.append((self.headers["Content-Type"], self.rfile.read(int(self.headers["Content-Length"]))))
            send_json(self, 500 if len(seen) == 1 else 200, {})

        def log_message(self, *args):
            pass

    async def edit(url):
        try:
            return await http.request("POST", url + "/v1/images/edits", attempts=2, deadline=5, form=(
                {"prompt": "a cat", "n": 2}, {"image": ("in.png", b"\x89PNG-bytes", "image/png")}))
        finally:
            await http.aclose_all()

    server, url = serve(Handler)
    try:
        response = asyncio.run(edit(url))
    finally:
        server.shutdown()
        server.server_close()
    assert response.status == 200 and len(seen) == 2
    for content_type, body in seen:
        assert content_type.startswith("multipart/form-data; boundary=")
        assert b'name="prompt"\r\n' in body and b"\r\n\r\na cat\r\n" in body
        assert b'name="n"\r\n' in body and b"\r\n\r\n2\r\n" in body
        assert b'name="image"; filename="in.png"' in body and b"\x89PNG-bytes" in body
