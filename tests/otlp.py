"""A loopback OTLP/HTTP collector: what Blaze's processes export when OTEL_EXPORTER_OTLP_ENDPOINT names it
(the web and worker processes are not this one, so the SDK's in-memory exporter cannot see their spans),
decoded from the wire into `Span`s."""

import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.upstream import serve

KINDS = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
TRACE_URL = "http://traces.example/trace/{trace_id}"  # the trace viewer the tests' traced processes link to


def _value(any_value):
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


@dataclass
class Span:
    name: str
    service: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: str
    attributes: dict
    failed: bool
    links: list = field(default_factory=list)  # (trace id, span id) of each linked span
    start_ns: int = 0
    end_ns: int = 0


class OtlpCollector:
    """Listens on a loopback port of its own (`endpoint`); `spans` holds every span received."""

    def __init__(self, port=0):
        self.spans = []
        self.posts = 0
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                export = ExportTraceServiceRequest.FromString(body)
                received = []
                for resource_spans in export.resource_spans:
                    resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
                    for scope_spans in resource_spans.scope_spans:
                        received += [_span(each, resource.get("service.name", "")) for each in scope_spans.spans]
                collector.spans += received
                collector.posts += 1
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if self.path == "/v1/traces" else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server, self.endpoint = serve(Handler, port)

    def trace(self, trace_id, until=None, timeout=15):
        """The spans of one trace once `until(spans)` holds (default: any arrived), waiting for the
        processes' batch exports; raises AssertionError with what did arrive if it never does."""
        until = until or bool
        deadline = time.monotonic() + timeout
        while True:
            spans = [span for span in self.spans if span.trace_id == trace_id]
            if until(spans):
                return spans
            if time.monotonic() > deadline:
                raise AssertionError(f"trace {trace_id}: only {sorted(span.name for span in spans)} arrived")
            time.sleep(0.1)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def _span(span, service):
    return Span(
        name=span.name, service=service, trace_id=span.trace_id.hex(), span_id=span.span_id.hex(),
        parent_id=span.parent_span_id.hex(), kind=KINDS.get(span.kind, str(span.kind)),
        attributes={kv.key: _value(kv.value) for kv in span.attributes}, failed=span.status.code == 2,
        links=[(link.trace_id.hex(), link.span_id.hex()) for link in span.links],
        start_ns=span.start_time_unix_nano, end_ns=span.end_time_unix_nano,
    )
