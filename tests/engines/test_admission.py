"""Bulkheads in the worker: a full engine queue or a full worker refuses at once, with a time to retry,
rather than letting requests wait without bound; and through /v1 that is a 429 in OpenAI's shape."""

import concurrent.futures
import threading
import time

import httpx
import orjson
import pytest

from core import shared_state
from engines import contract
from engines.contract import EngineSpec
from engines.models import Engine
from engines.worker.host import EngineHost
from tests.engines.test_cache import SizedRuntime

pytestmark = pytest.mark.django_db(transaction=True)
MiB = 1024 * 1024


class GatedRuntime(SizedRuntime):
    """Runs one request at a time, each until the test opens the gate."""

    gate = threading.Event()

    def run_batch(self, requests, emit):
        GatedRuntime.gate.wait(10)
        return [{"text": "ok", "finish_reason": "stop", "prompt_tokens": 1, "completion_tokens": 1}
                for _ in requests]


@pytest.fixture
def host():
    GatedRuntime.gate = threading.Event()
    host = EngineHost("admission@test", threads=16)
    host.cache.runtime_factory = GatedRuntime
    yield host
    GatedRuntime.gate.set()
    host.cache.clear()


def events(request_id):
    entries = shared_state.client().xrange(contract.response_stream(request_id))
    return [orjson.loads(fields["event"]) for _, fields in entries]


def final(request_id, within=5):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        done = [event for event in events(request_id) if event["type"] in contract.FINAL]
        if done:
            return done[0]
        time.sleep(0.01)
    raise AssertionError(f"no final event for {request_id}")


def background(host, request_id, spec):
    thread = threading.Thread(target=host.infer, args=(request_id, spec, {"prompt": request_id}))
    thread.start()
    return thread


def test_a_full_engine_queue_refuses_at_once_and_the_queued_requests_still_run(host):
    spec = EngineSpec(name="gated", kind="llm", model="m",
                      config={"size": MiB, "max_batch_size": 1, "batch_wait_ms": 0, "max_queue": 2}).as_dict()
    threads = [background(host, "running", spec)]
    while host.cache.peek("gated") is None or host.cache.peek("gated").batcher.pending:
        time.sleep(0.01)
    threads += [background(host, f"waiting-{n}", spec) for n in range(2)]
    while host.cache.peek("gated").batcher.pending < 2:
        time.sleep(0.01)
    asked = time.monotonic()
    host.infer("refused", spec, {"prompt": "one too many"})
    refused = final("refused")
    assert time.monotonic() - asked < 1  # at once, not after the queue drained
    assert refused["error"] == "queue_full" and refused["retry_after"] >= 1
    assert "max_queue is 2" in refused["message"]
    GatedRuntime.gate.set()
    for thread in threads:
        thread.join(10)
    assert all(final(name)["type"] == contract.DONE for name in ("running", "waiting-0", "waiting-1"))
    assert final("waiting-1")["result"]["queue_seconds"] > 0  # it waited in the worker, and says how long


def test_a_worker_at_its_most_requests_refuses_at_once_without_running_it(host, settings):
    settings.BLAZE_WORKER_MAX_IN_FLIGHT = 1
    host.max_in_flight = 1
    spec = EngineSpec(name="gated", kind="llm", model="m", config={"size": MiB}).as_dict()
    running = background(host, "busy-running", spec)
    while host.tasks < 1:
        time.sleep(0.01)
    host.infer("busy-refused", spec, {"prompt": "one too many"})
    refused = final("busy-refused")
    assert refused["error"] == "worker_busy" and refused["retry_after"] == 1
    assert not any(event["type"] == contract.START for event in events("busy-refused"))  # never taken on
    assert not shared_state.client().exists(contract.request_done("busy-refused"))  # another worker may take it
    GatedRuntime.gate.set()
    running.join(10)
    assert final("busy-running")["type"] == contract.DONE and host.tasks == 0


@pytest.mark.slow
def test_over_the_queue_cap_v1_answers_429_with_retry_after_in_openais_shape(engine_worker, tiny_llm_path,
                                                                             live_blaze, openai_client):
    Engine.objects.create(name="tiny-capped", kind="llm", model=tiny_llm_path,
                          config={"max_new_tokens": 200, "max_batch_size": 1, "batch_wait_ms": 0, "max_queue": 1})
    body = {"model": "tiny-capped", "messages": [{"role": "user", "content": "go on"}], "max_tokens": 200,
            "temperature": 0}
    headers = {"Authorization": f"Bearer {openai_client.api_key}"}
    with httpx.Client(base_url=live_blaze, headers=headers, timeout=60) as client:
        assert client.post("/v1/chat/completions", json={**body, "max_tokens": 1}).status_code == 200  # loaded

        def send(_):
            started = time.monotonic()
            response = client.post("/v1/chat/completions", json=body)
            return response, time.monotonic() - started

        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(send, range(12)))
    statuses = sorted(response.status_code for response, _ in answers)
    refused = [(response, seconds) for response, seconds in answers if response.status_code == 429]
    assert set(statuses) <= {200, 429} and statuses.count(200) >= 2 and refused
    for response, seconds in refused:
        error = response.json()["error"]
        assert error["type"] == "rate_limit_error" and error["code"] == "queue_full", error
        assert int(response.headers["Retry-After"]) >= 1
        assert "max_queue is 1" in error["message"]
        assert seconds < min(s for r, s in answers if r.status_code == 200) + 1
