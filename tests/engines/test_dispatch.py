"""The web side hands a request to a worker (engines/serving/dispatch.py) as the contract says."""

import asyncio
import base64
import json

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
