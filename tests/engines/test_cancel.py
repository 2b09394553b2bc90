"""A request its client gives up (Stop, a dropped stream, the deadline) stops in the worker: its row
stops decoding and it no longer counts in flight, while the rest of the batch goes on."""

import threading
import time

import orjson
import pytest

from core import shared_state
from engines import contract
from engines.contract import EngineSpec
from engines.worker.host import EngineHost
from tests.engines.test_cache import SizedRuntime

pytestmark = pytest.mark.django_db(transaction=True)
MiB = 1024 * 1024


class SlowRuntime(SizedRuntime):
    """Streams a token every 20 ms, up to 100, unless its request is cancelled."""

    sent = {}

    def run_batch(self, requests, emit):
        results = []
        for index, request in enumerate(requests):
            sent = 0
            while sent < 100 and not request["cancelled"]():
                emit(index, {"type": "token", "text": "x"})
                sent += 1
                time.sleep(0.02)
            SlowRuntime.sent[request["prompt"]] = sent
            results.append({"text": "x" * sent, "finish_reason": "length", "prompt_tokens": 1,
                            "completion_tokens": sent})
        return results


@pytest.fixture
def host():
    host = EngineHost("unit@test")
    host.cache.runtime_factory = SlowRuntime
    yield host
    host.cache.clear()


def tokens_streamed(request_id):
    entries = shared_state.client().xrange(contract.response_stream(request_id))
    return sum(orjson.loads(fields["event"])["type"] == "token" for _, fields in entries)


def test_a_cancelled_request_stops_decoding_and_leaves_the_worker_at_once(host):
    spec = EngineSpec(name="slow", kind="llm", model="m", config={"size": MiB}).as_dict()
    running = threading.Thread(target=host.infer, args=("req-cancel", spec, {"prompt": "p1", "stream": True}))
    running.start()
    while tokens_streamed("req-cancel") < 3:
        time.sleep(0.01)
    assert host.in_flight == 1
    shared_state.client().set(contract.request_cancelled("req-cancel"), 1)  # what the web side does
    given_up = time.monotonic()
    running.join(timeout=5)
    assert time.monotonic() - given_up < 1 and host.in_flight == 0
    time.sleep(0.2)
    assert SlowRuntime.sent["p1"] < 50  # the row stopped, rather than running to its 100 tokens
    assert tokens_streamed("req-cancel") <= SlowRuntime.sent["p1"]


def test_a_request_nobody_gives_up_runs_to_its_end(host):
    spec = EngineSpec(name="slow", kind="llm", model="m", config={"size": MiB}).as_dict()
    host.infer("req-kept", spec, {"prompt": "p2", "stream": False})
    assert SlowRuntime.sent["p2"] == 100 and host.in_flight == 0
