"""What a route's attempt counts when it ends, against a real loopback upstream: an answer in the
target's breaker, health and numbers at once; a stream the client leaves halfway, nothing; a stream
that loses Blaze's own Redis halfway, nothing, and it ends with Redis's 503 error event."""

import asyncio
from types import SimpleNamespace

import pytest
import redis

from core import shared_state
from core.http_errors import http_status
from engines import contract
from engines.models import Engine, Route, RouteTarget
from engines.serving.failover import _Attempt, _counted, serve
from engines.serving.plan import resolve
from engines.serving.request import InferenceRequest
from engines.serving.resilience import breaker, health
from engines.serving.router import state
from tests.upstream import run

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "Hi"}]}


@pytest.fixture
def plan(db, upstream):
    engine = Engine.objects.create(name="far", kind="llm", backend="remote", model="up",
                                   base_url=upstream.base_url("ok"))
    target = RouteTarget.objects.create(route=Route.objects.create(name="chat"), engine=engine)
    return resolve("chat", "llm"), target.pk


def counts(target_pk):
    snapshot, numbers = breaker.CircuitBreaker("far").snapshot(), state.read([target_pk])[target_pk]
    monitor = health.HealthMonitor("far").snapshot()
    return {
        "breaker": (snapshot["window_calls"], snapshot["window_failures"]),
        "health": (monitor["state"], monitor["consecutive_failures"]),
        "route": (numbers.in_flight, numbers.completed, numbers.errors),
    }


def test_an_answer_counts_in_the_breaker_health_and_numbers_in_the_same_round_trip(plan, monkeypatch):
    plan, target_pk = plan
    trips = []
    batch, script = shared_state.abatch, shared_state.Script.arun

    async def counted_batch(queue):
        trips.append("batch")
        return await batch(queue)

    async def counted_script(self, keys, args):
        trips.append("script")
        return await script(self, keys, args)

    monkeypatch.setattr(shared_state, "abatch", counted_batch)
    monkeypatch.setattr(shared_state.Script, "arun", counted_script)
    served = run(serve(InferenceRequest("chat", CHAT, plan=plan, data={"payload": {}})))
    assert served.response.status == 200 and b"Hello from upstream." in served.body
    assert trips == ["batch", "batch"]  # the pick with its lease and permit; the outcome
    assert counts(target_pk) == {"breaker": (1, 0), "health": ("healthy", 0), "route": (0, 1, 0)}


def test_a_stream_the_client_leaves_halfway_counts_against_nobody(plan):
    plan, target_pk = plan

    async def read_one_chunk():
        served = await serve(InferenceRequest("chat", {**CHAT, "stream": True}, stream=True, plan=plan,
                                              data={"payload": {}}))
        chunks = served.chunks()
        first = await anext(chunks)
        await chunks.aclose()  # what Django does with the stream when the client goes away
        return first

    assert run(read_one_chunk()).startswith(b"data: ")
    assert counts(target_pk) == {"breaker": (0, 0), "health": ("unknown", 0), "route": (0, 0, 0)}


def test_a_stream_read_to_its_end_counts_as_a_success(plan):
    plan, target_pk = plan

    async def read_all():
        served = await serve(InferenceRequest("chat", {**CHAT, "stream": True}, stream=True, plan=plan,
                                              data={"payload": {}}))
        return b"".join([chunk async for chunk in served.chunks()])

    assert run(read_all()).endswith(b"data: [DONE]\n\n")
    assert counts(target_pk) == {"breaker": (1, 0), "health": ("healthy", 0), "route": (0, 1, 0)}


def test_a_local_stream_that_loses_redis_halfway_ends_with_redis_s_503_counted_against_nobody(settings):
    """Its 200 went out with the first token: the client hears why it stops from an error event (the
    one a 503 carries), not from a connection that hangs; and the lease it held is let lapse, not
    given back, since Redis is gone."""
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there

    async def events():
        yield {"type": "token", "text": "Hel"}
        raise redis.ConnectionError("Connection closed by server.")

    async def read():
        route, engine = Route(name="chat"), Engine(name="near", kind="llm")
        candidate = SimpleNamespace(id=1, target=RouteTarget(route=route, engine=engine))
        attempt = _Attempt(engine=engine, route=route, candidate=candidate, lease="lease-1")
        stream = events()
        return [event async for event in _counted(await anext(stream), stream, attempt)]

    token, error = asyncio.run(read())
    assert token == {"type": "token", "text": "Hel"}
    assert (error["error"], error["code"]) == ("service_unavailable", "redis_unavailable")
    refusal = contract.error_from(error)
    assert http_status(refusal) == 503 and refusal.message == "Redis does not answer; try again in a few seconds."
