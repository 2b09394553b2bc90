"""The web side hands a request to a worker (engines/serving/dispatch.py) as the contract says."""

import asyncio
import base64
import json
import time

import pytest
from django.conf import settings

from engines import contract
from engines.models import Engine
from engines.serving import dispatch
from engines.worker.host import publish


def queued(redis_client, queue):
    return [json.loads(raw) for raw in redis_client.lrange(f"{settings.REDIS_PREFIX}:celery:{queue}", 0, -1)]


def test_a_request_goes_to_the_chosen_worker_s_own_queue_by_task_name_and_expects_no_result(redis_client):
    dispatch._send("req-1", {"name": "tiny"}, {"prompt": "Hi"}, "tiny", worker_id="w9")
    [message] = queued(redis_client, contract.worker_queue("w9"))
    assert message["headers"]["task"] == contract.INFER_TASK
    # The answer travels on the request's stream: a sender that expected a task result would
    # subscribe to it in Redis for every request.
    assert message["headers"]["ignore_result"] is True


def request_id_of(message):
    """The request id of a queued infer task (its first argument)."""
    return json.loads(base64.b64decode(message["body"]))[0][0]


def relay(redis_client, events_after_start):
    """Run dispatch.run for a request to worker w9, answer it as a worker would (start, then the given
    events), read the first token, then stop reading: whether the worker was told to give it up."""
    engine = Engine(name="tiny", kind="llm", model="m")

    async def scenario():
        events = dispatch.run(engine, {"prompt": "Hi", "stream": True}, worker_id="w9", timeout=10)
        first = asyncio.ensure_future(anext(events))
        await asyncio.sleep(0.2)
        request_id = request_id_of(queued(redis_client, contract.worker_queue("w9"))[0])
        for event in [{"type": "start", "worker": "w9"}, *events_after_start]:
            publish(request_id, event)
        assert (await first)["type"] == "token"
        if events_after_start[-1]["type"] == "done":
            assert (await anext(events))["type"] == "done"
        await events.aclose()  # the client stops reading (Stop, or it went away)
        return bool(redis_client.exists(contract.request_cancelled(request_id)))

    return asyncio.run(scenario())


def test_a_stream_given_up_midway_tells_the_worker_to_stop(redis_client):
    assert relay(redis_client, [{"type": "token", "text": "Hel"}, {"type": "token", "text": "lo"}]) is True


def test_a_stream_read_to_its_end_leaves_nothing_to_stop(redis_client):
    assert relay(redis_client, [{"type": "token", "text": "Hi"}, {"type": "done", "result": {}}]) is False


@pytest.fixture
def beating(redis_client):
    """beating(*names): heartbeats for workers that are only names in Redis, as a worker's `beat`
    writes them, each holding engine "tiny" (so it ranks before a real worker of the session that
    does not); gone after the test, so no other test sees workers that do not exist."""
    from core import shared_state

    names = []

    def beat(*more):
        for name in more:
            names.append(name)
            redis_client.set(shared_state.worker_key(name), json.dumps(
                {"id": name, "device": "cpu", "last_seen": time.time(), "cache": [{"engine": "tiny"}],
                 "in_flight": 0}), ex=60)
            redis_client.sadd(shared_state.workers_key(), name)

    yield beat
    for name in names:
        redis_client.delete(shared_state.worker_key(name))
        redis_client.srem(shared_state.workers_key(), name)


def refused_as_busy(redis_client, beating, pinned):
    """A request to w9, which answers worker_busy: the events the client gets, and whether it moved to w0
    (named to rank before any real worker of the session that holds the engine too)."""
    beating("w9", "w0")
    engine = Engine(name="tiny", kind="llm", model="m")
    busy = {"type": "error", "error": "worker_busy", "message": "Worker w9 already runs 1 requests",
            "param": None, "retry_after": 1}

    async def scenario():
        events = dispatch.run(engine, {"prompt": "Hi"}, worker_id="w9", timeout=10, pinned=pinned)
        first = asyncio.ensure_future(anext(events))
        await asyncio.sleep(0.2)
        request_id = request_id_of(queued(redis_client, contract.worker_queue("w9"))[0])
        publish(request_id, busy)
        await asyncio.sleep(0.3)
        moved = [request_id_of(m) for m in queued(redis_client, contract.worker_queue("w0"))]
        if moved:
            publish(request_id, {"type": "start", "worker": "w0"})
            publish(request_id, {"type": "done", "result": {"text": "Hello"}})
        event = await first
        await events.aclose()
        return event, moved == [request_id]

    return asyncio.run(scenario())


def test_a_busy_worker_s_refusal_is_sent_to_another_live_worker(redis_client, beating):
    event, moved = refused_as_busy(redis_client, beating, pinned=False)
    assert moved and event == {"type": "done", "result": {"text": "Hello"}}


def test_a_request_pinned_to_a_busy_worker_stays_refused_for_the_route_to_move_on(redis_client, beating):
    event, moved = refused_as_busy(redis_client, beating, pinned=True)
    assert not moved and event["error"] == "worker_busy" and event["retry_after"] == 1


def test_a_request_pinned_to_a_worker_that_stops_beating_fails_for_the_route_to_move_on(redis_client, beating):
    from core import errors

    beating("w8")  # alive, but the target is pinned to w7, which has no heartbeat
    before = len(queued(redis_client, contract.worker_queue("w8")))
    engine = Engine(name="tiny", kind="llm", model="m")

    async def scenario():
        async for _ in dispatch.run(engine, {"prompt": "Hi"}, worker_id="w7", timeout=10, pinned=True):
            pass

    with pytest.raises(errors.Unavailable, match="pinned"):
        asyncio.run(scenario())
    assert len(queued(redis_client, contract.worker_queue("w8"))) == before  # not moved to w8


def test_a_stream_whose_redis_is_lost_midway_is_given_up_without_a_second_error(redis_client, tmp_path, settings):
    """Its relay's clean-up (delete the stream, tell the worker to stop) cannot reach Redis either: the
    relay ends quietly, so what ended the request (Redis's own error, the client leaving) is what the
    view answers with, and a stream already begun still gets its error event and its end."""
    from tests.servers import start_redis

    own = start_redis(tmp_path)  # the request's stream lives here, and goes away; the broker stays up
    settings.REDIS_URL = own.url
    engine = Engine(name="tiny", kind="llm", model="m")

    async def scenario():
        events = dispatch.run(engine, {"prompt": "Hi", "stream": True}, worker_id="w6", timeout=10)
        first = asyncio.ensure_future(anext(events))
        await asyncio.sleep(0.2)
        request_id = request_id_of(queued(redis_client, contract.worker_queue("w6"))[0])
        for event in [{"type": "start", "worker": "w6"}, {"type": "token", "text": "Hel"}]:
            publish(request_id, event)
        assert (await first)["type"] == "token"
        own.kill()
        await events.aclose()  # what the view does when the stream ends on an error, or the client leaves

    try:
        asyncio.run(scenario())
    finally:
        own.stop()
        redis_client.delete(f"{settings.REDIS_PREFIX}:celery:{contract.worker_queue('w6')}")
