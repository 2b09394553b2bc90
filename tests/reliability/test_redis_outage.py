"""Redis stops during traffic: requests fail fast with a 503 that names Redis while it is down, and
Blaze (web, worker, live feed) recovers without a restart when it comes back empty, as after a
failover. Its own Redis, web server, worker and feed, so the rest of the suite's stay up."""

import concurrent.futures
import time

import httpx
import pytest

from accounts import services as account_services
from accounts.audit import Actor
from core import shared_state
from engines.heartbeats import worker_info
from engines.models import Engine
from tests.conftest import make_user
from tests.servers import start_daphne, start_live_feed, start_redis, start_worker, wait_for

pytestmark = [pytest.mark.reliability, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def stack(tmp_path, settings, tiny_llm_path):
    """(redis, web, worker, feed, headers) on a Redis of their own; this process reads heartbeats from it too."""
    from engines.demo import minilm_path

    redis = start_redis(tmp_path)
    settings.REDIS_URL = redis.url
    Engine.objects.create(name="outage-embed", kind="embedding", model=minilm_path())
    Engine.objects.create(name="outage-chat", kind="llm", model=tiny_llm_path, config={"max_new_tokens": 32})
    _, raw = account_services.api_key_create(actor=Actor.system("test"), user=make_user("app", "viewer"),
                                             name="app", scopes=["inference", "read"])
    processes = []
    try:
        processes.append(start_worker(tmp_path, "outage", REDIS_URL=redis.url))
        processes.append(start_daphne(tmp_path, REDIS_URL=redis.url))
        processes.append(start_live_feed(tmp_path, REDIS_URL=redis.url))
        yield redis, *processes, {"Authorization": f"Bearer {raw}"}
    finally:
        for process in processes:
            process.stop()
        redis.stop()


def embed(web, headers):
    return httpx.post(f"{web.url}/v1/embeddings", json={"model": "outage-embed", "input": ["a cat", "a dog"]},
                      headers=headers, timeout=60)


def chat(web, headers, stream=False):
    body = {"model": "outage-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "stream": stream}
    return httpx.post(f"{web.url}/v1/chat/completions", json=body, headers=headers, timeout=60)


def timed(call):
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


class Traffic:
    """Steady embedding requests from two clients, recorded as (started, status, seconds)."""

    def __init__(self, web, headers):
        self.web, self.headers, self.calls, self.running = web, headers, [], True
        self.pool = concurrent.futures.ThreadPoolExecutor(2)
        self.clients = [self.pool.submit(self._client) for _ in range(2)]

    def _client(self):
        while self.running:
            started = time.monotonic()
            try:
                status = embed(self.web, self.headers).status_code
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            self.calls.append((started, status, time.monotonic() - started))
            time.sleep(0.05)

    def stop(self):
        self.running = False
        for client in self.clients:
            client.result()
        self.pool.shutdown()


def test_requests_fail_fast_while_redis_is_down_and_everything_recovers_when_it_returns(stack, tmp_path, request):
    redis, worker, web, feed, headers = stack
    assert embed(web, headers).status_code == 200 and chat(web, headers).status_code == 200  # models loaded
    traffic = Traffic(web, headers)
    try:
        time.sleep(1)
        redis.kill()
        down = [timed(lambda: embed(web, headers)), timed(lambda: chat(web, headers)),
                timed(lambda: chat(web, headers, stream=True))]
        for response, seconds in down:
            assert response.status_code == 503, response.text
            assert response.json()["error"]["message"] == "Redis does not answer; try again in a few seconds."
            assert seconds < 5 and response.headers["Retry-After"] == "5"
        # What needs no Redis still answers: liveness, and the registry (the database).
        assert httpx.get(f"{web.url}/health", timeout=10).status_code == 200
        assert httpx.get(f"{web.url}/api/engines/", headers=headers, timeout=30).status_code == 200
        time.sleep(5)  # an outage of some seconds, as in a failover

        redis = start_redis(tmp_path, port=redis.port)  # back, and empty
        request.addfinalizer(redis.stop)
        back = time.monotonic()
        wait_for(lambda: worker_info(worker.hostname) is not None, 20, "the worker's heartbeat in the new Redis")
        wait_for(lambda: embed(web, headers).status_code == 200, 30, "embeddings answered again")
        recovered = time.monotonic()
        time.sleep(3)
    finally:
        traffic.stop()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        after = list(pool.map(lambda _: timed(lambda: embed(web, headers)), range(16)))
        after += list(pool.map(lambda _: timed(lambda: chat(web, headers)), range(8)))
    assert [response.status_code for response, _ in after] == [200] * 24
    assert max(seconds for _, seconds in after) < 10
    assert {status for _, status, _ in traffic.calls} <= {200, 503}  # an answer or a clear refusal, always
    assert max(seconds for _, _, seconds in traffic.calls) < 10  # none hung
    assert all(status == 200 for started, status, _ in traffic.calls if started > recovered)
    assert recovered - back < 15
    wait_for(lambda: worker_info(worker.hostname)["in_flight"] == 0, 5, "the worker's in-flight count back to 0")
    wait_for(lambda: shared_state.client().get(shared_state.feed_latest_key()) is not None, 10,
             "the live feed publishing again")
