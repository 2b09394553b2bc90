"""What a route's attempt counts when it ends, against a real loopback upstream: an answer in the
target's breaker, health and numbers at once; a stream the client leaves halfway, nothing."""

import pytest

from blaze_site import shared_state
from engines.models import Engine, Route, RouteTarget
from engines.serving.failover import serve
from engines.serving.plan import resolve
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
    served = run(serve(plan, "chat", {}, CHAT))
    assert served.response.status == 200 and b"Hello from upstream." in served.body
    assert trips == ["batch", "batch"]  # the pick with its lease and permit; the outcome
    assert counts(target_pk) == {"breaker": (1, 0), "health": ("healthy", 0), "route": (0, 1, 0)}


def test_a_stream_the_client_leaves_halfway_counts_against_nobody(plan):
    plan, target_pk = plan

    async def read_one_chunk():
        served = await serve(plan, "chat", {}, {**CHAT, "stream": True}, stream=True)
        chunks = served.chunks()
        first = await anext(chunks)
        await chunks.aclose()  # what Django does with the stream when the client goes away
        return first

    assert run(read_one_chunk()).startswith(b"data: ")
    assert counts(target_pk) == {"breaker": (0, 0), "health": ("unknown", 0), "route": (0, 0, 0)}


def test_a_stream_read_to_its_end_counts_as_a_success(plan):
    plan, target_pk = plan

    async def read_all():
        served = await serve(plan, "chat", {}, {**CHAT, "stream": True}, stream=True)
        return b"".join([chunk async for chunk in served.chunks()])

    assert run(read_all()).endswith(b"data: [DONE]\n\n")
    assert counts(target_pk) == {"breaker": (1, 0), "health": ("healthy", 0), "route": (0, 1, 0)}
