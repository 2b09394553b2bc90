"""Fixtures for the resilience tests, used by name: real loopback HTTP upstreams and a clock that tests
move by hand."""

import time
import uuid
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler

import pytest

from tests.servers import free_port
from tests.upstream import send_json, serve

SLOW_SECONDS = 1.0


class Clock:
    """Stands in for time.time: starts at 1000 and moves only when told."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


class Upstream:
    """A real HTTP/1.1 server on 127.0.0.1 whose answer depends on the first path segment:

    ok → 200 JSON · fail → 500 · bad → 400 · slow → 200 after SLOW_SECONDS · flaky-N → 500 for the
    first N requests to that path, then 200 · nomodels → 404 · /health → 200.
    `hits[path]` counts requests; `connections[path]` the distinct client connections they came on.
    """

    def __init__(self):
        self.hits = Counter()
        self.connections = defaultdict(set)
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, so pooled connections can be seen reused

            def do_GET(self):
                upstream.hits[self.path] += 1
                upstream.connections[self.path].add(self.client_address)
                behaviour = self.path.strip("/").split("/")[0]
                if behaviour in ("ok", "health"):
                    self._answer(200, {"object": "list", "data": []})
                elif behaviour == "fail":
                    self._answer(500, {"error": "boom"})
                elif behaviour == "bad":
                    self._answer(400, {"error": "bad request"})
                elif behaviour == "slow":
                    time.sleep(SLOW_SECONDS)
                    self._answer(200, {"slow": True})
                elif behaviour == "drop":  # promises a body, sends half of it, hangs up
                    self.send_response(200)
                    self.send_header("Content-Length", "100")
                    self.end_headers()
                    self.wfile.write(b'{"half": ')
                    self.wfile.flush()
                    self.close_connection = True
                elif behaviour.startswith("flaky-"):
                    failures = int(behaviour.split("-")[1])
                    self._answer(500 if upstream.hits[self.path] <= failures else 200, {})
                else:
                    self._answer(404, {"error": "not found"})

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.do_GET()

            def _answer(self, status, body):
                send_json(self, status, body)

            def log_message(self, *args):
                pass

        self.server, self.url = serve(Handler)

    def path(self, behaviour):
        """A fresh path (so counts start at zero) for one behaviour: `/fail/3f2a…`."""
        return f"/{behaviour}/{uuid.uuid4().hex}"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def upstream():
    server = Upstream()
    yield server
    server.stop()


@pytest.fixture
def refused_url():
    """A URL on a port where nothing listens: connections are refused."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def clock():
    return Clock()
