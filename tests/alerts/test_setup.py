"""What the alerting tests share: a loopback webhook receiver and the helpers that make rules and samples."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from accounts.audit import Actor
from alerts import services as alert_services
from telemetry.series import Sample

ACTOR = Actor.system("test")


class Loopback:
    """A webhook receiver on 127.0.0.1 (a ThreadingHTTPServer in a thread). `received`: the JSON of each
    post, failed ones too; `answers`: statuses to answer in turn, then 200; `hang`: seconds to wait
    before answering (cut short when the receiver stops)."""

    def __init__(self):
        self.received, self.answers, self.hang = [], [], 0
        self._stopping = threading.Event()
        loopback = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                loopback.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                loopback._stopping.wait(loopback.hang)
                status = loopback.answers.pop(0) if loopback.answers else 200
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(b'{"status": "thanks"}' if status < 400 else b'{"error": "no"}')
                except OSError:  # the client gave up waiting
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._stopping.set()
        self.server.shutdown()
        self.server.server_close()


def make_rule(**fields):
    """A rule made through the service: p95 latency over 5 s, for 60 s, unless told."""
    fields = {"name": "chat-slow", "series": "route_latency_p95_seconds", "comparator": ">", "threshold": 5,
              "for_seconds": 60, "annotations": {"summary": "Route {{ $labels.route }}: p95 {{ $value }} s"},
              **fields}
    return alert_services.alert_rule_create(actor=ACTOR, **fields)


def make_receiver(url, **fields):
    return alert_services.alert_receiver_create(actor=ACTOR, **{"name": "on-call", "url": url, **fields})


def latency(value, route="chat"):
    return Sample("route_latency_p95_seconds", value, {"route": route})


def now_seconds():
    return float(int(time.time()))
