"""Distributed tracing (OpenTelemetry): one trace per request, from daphne through the route pick, each
failover attempt, the Celery task, the batcher's wait and the runtime's run, back to the response.

Off unless OTEL_EXPORTER_OTLP_ENDPOINT is set (settings.TRACING). Then `configure()` (blaze_site/asgi.py
in a web process, the worker's start in a worker) installs the SDK with an OTLP/HTTP exporter and the
maintained instrumentations: ASGI (each HTTP request's server span, to the end of a streamed body),
Celery (the task's span, its context carried in the task's headers) and aiohttp's client (a remote
host's call, with `traceparent` sent on); redis only with BLAZE_TRACE_REDIS, since its spans (3 more
a request) cost more than they tell (docs/benchmarks.md). The SDK reads its own OTEL_*
variables (service name, headers, batch delays). Off, nothing is installed: `span()` hands out the
API's no-op span and `record()` returns at once.

Django's own instrumentation is not used: its span ends when the view returns, before a streamed body
is sent, and it hooks settings.MIDDLEWARE only, not /v1's chain (blaze_site/asgi.py).
"""

import contextlib
import os
import time
from collections.abc import Iterable, Sequence
from typing import Any

from django.conf import settings
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, Sampler, SamplingResult, TraceIdRatioBased
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

tracer = trace.get_tracer("blaze")
SERVER = SpanKind.SERVER  # a span that starts a request's trace (`span(..., kind=SERVER)`)
ENABLED = False
UNTRACED = ("/health", "/metrics", "/static/")  # probes and scrapes: a trace each would bury the requests


class RequestsOnly(Sampler):
    """Starts traces at requests only (a SERVER span: an HTTP request, a playground prompt), `ratio` of
    them. Whatever else would start one (a heartbeat's Redis write, a health check's call upstream) is
    not recorded; spans inside a trace follow their parent's decision (ParentBased)."""

    def __init__(self, ratio: float) -> None:
        self.requests = TraceIdRatioBased(ratio)

    def should_sample(self, parent_context: Context | None, trace_id: int, name: str, kind: SpanKind | None = None,
                      attributes: Attributes = None, links: Sequence[Link] | None = None,
                      trace_state: TraceState | None = None) -> SamplingResult:
        if kind != SpanKind.SERVER:
            return SamplingResult(Decision.DROP)
        return self.requests.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"RequestsOnly({self.requests.rate})"


def configure(service: str) -> None:
    """Install the SDK with the OTLP exporter, and the instrumentations, for this process (`service` names
    it unless OTEL_SERVICE_NAME does); once, and only when settings.TRACING."""
    if ENABLED or not settings.TRACING:
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.sdk.resources import OTEL_SERVICE_NAME, Resource
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({} if os.environ.get(OTEL_SERVICE_NAME) else {"service.name": service})
    provider = TracerProvider(resource=resource, sampler=sampler())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    install(provider)
    CeleryInstrumentor().instrument()
    AioHttpClientInstrumentor().instrument()
    if settings.BLAZE_TRACE_REDIS:
        RedisInstrumentor().instrument()


def sampler() -> Sampler:
    return ParentBased(RequestsOnly(settings.BLAZE_TRACE_SAMPLE_RATIO))


def install(provider: TracerProvider) -> None:
    """Make `provider` this process's and turn Blaze's spans on: `configure`'s, or a test's with the
    SDK's in-memory exporter. Once per process (the API keeps the first provider set)."""
    global ENABLED
    from opentelemetry.instrumentation.propagators import TraceResponsePropagator, set_global_response_propagator

    trace.set_tracer_provider(provider)
    set_global_response_propagator(TraceResponsePropagator())  # a client finds its trace: `traceresponse`
    ENABLED = True


def asgi(app: Any) -> Any:
    """The ASGI app with a server span per HTTP request (not per chunk sent: `exclude_spans`)."""
    if not ENABLED:
        return app
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    return OpenTelemetryMiddleware(app, excluded_urls=",".join(UNTRACED), exclude_spans=["receive", "send"])


def span(name: str, kind: SpanKind = SpanKind.INTERNAL, links: Iterable[SpanContext | None] = (),
         **attributes: Any) -> contextlib.AbstractContextManager[Span]:
    """A span around a block, a child of the current one (`with tracing.span(...) as span:`); the
    attributes are Blaze's (`blaze.<name>`), those that are None left out; `links`: the spans (`here()`)
    of other requests it serves too. An error raised through it marks it failed. Inside a request not
    traced (BLAZE_TRACE_SAMPLE_RATIO) it is the no-op span at once, as the sampler would decide."""
    if not ENABLED or (kind != SERVER and not trace.get_current_span().is_recording()):
        return contextlib.nullcontext(trace.INVALID_SPAN)
    return tracer.start_as_current_span(name, kind=kind, attributes=_attributes(attributes),
                                        links=[trace.Link(each) for each in links if each is not None])


def here() -> SpanContext | None:
    """The current span's context, to link to from work done for several requests at once; None when off."""
    return trace.get_current_span().get_span_context() if ENABLED else None


def record(name: str, started_ns: int, ended_ns: int | None = None, error: str | None = None,
           **attributes: Any) -> None:
    """A span that already happened (times from time.time_ns()), a child of the current one: what a
    request spent in a worker's batcher, measured on the batcher's thread."""
    if not ENABLED or not trace.get_current_span().is_recording():
        return
    done = tracer.start_span(name, start_time=started_ns, attributes=_attributes(attributes))
    if error:
        done.set_status(Status(StatusCode.ERROR, error))
    done.end(end_time=ended_ns or time.time_ns())


def note(**attributes: Any) -> None:
    """Blaze's attributes on the current span (the task's, the attempt's)."""
    if ENABLED:
        trace.get_current_span().set_attributes(_attributes(attributes))


def fail(message: str) -> None:
    """Mark the current span failed, with the error's sentence: a failure answered, not raised."""
    if ENABLED:
        trace.get_current_span().set_status(Status(StatusCode.ERROR, message))


def quiet() -> contextlib.AbstractContextManager[object]:
    """A block whose Redis and HTTP calls make no spans (with BLAZE_TRACE_REDIS): what runs once per
    token (a stream's relay) or per poll would bury the request's other spans."""
    if not ENABLED:
        return contextlib.nullcontext()
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    return suppress_instrumentation()


def trace_id() -> str:
    """The current trace's id (32 hex digits) when it is recorded, else "" (at once when off: every log
    line asks)."""
    if not ENABLED:
        return ""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.trace_flags.sampled else ""


def trace_link() -> dict[str, str | None]:
    """{"trace_id", "trace_url"} of the current trace, for an answer's stats: the URL from BLAZE_TRACE_URL
    ("…/trace/{trace_id}", a Jaeger's or Tempo's trace page), None without it; {} when not traced."""
    ident = trace_id()
    return {"trace_id": ident, "trace_url": trace_url(ident)} if ident else {}


def trace_url(ident: str) -> str | None:
    """The trace viewer's page for a trace id (BLAZE_TRACE_URL), or None."""
    template = settings.BLAZE_TRACE_URL
    return template.replace("{trace_id}", ident) if template and ident else None


def _attributes(given: dict[str, Any]) -> dict[str, Any]:
    return {f"blaze.{key}": value for key, value in given.items() if value is not None}
