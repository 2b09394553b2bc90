"""The web side hands a request to a worker (engines/serving/dispatch.py) as the contract says."""

import json

from django.conf import settings

from engines import contract
from engines.serving import dispatch


def queued(redis_client, queue):
    return [json.loads(raw) for raw in redis_client.lrange(f"{settings.REDIS_PREFIX}:celery:{queue}", 0, -1)]


def test_a_request_goes_to_the_chosen_worker_s_own_queue_by_task_name_and_expects_no_result(redis_client):
    dispatch._send("req-1", {"name": "tiny"}, {"prompt": "Hi"}, "tiny", worker_id="w9")
    [message] = queued(redis_client, contract.worker_queue("w9"))
    assert message["headers"]["task"] == contract.INFER_TASK
    # The answer travels on the request's stream: a sender that expected a task result would
    # subscribe to it in Redis for every request.
    assert message["headers"]["ignore_result"] is True
