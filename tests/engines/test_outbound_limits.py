"""Outbound caps per remote host: a remote engine's `max_rps` and `max_concurrency`, kept in Redis by
every web process as one. Against two daphne processes on the same Redis and a loopback upstream that
records when each request reached it and how many it answered at once (tests/upstream.py)."""

import asyncio
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from core import shared_state
from dashboard import selectors as monitoring_selectors
from engines.models import Engine, Route, RouteTarget
from engines.serving import remote
from engines.serving.resilience import breaker, outbound
from telemetry import request_log
from tests.conftest import make_user
from tests.servers import ROOT, metrics_published, server_env
from tests.upstream import OpenAIUpstream, run

pytestmark = pytest.mark.django_db(transaction=True)
DEADLINE = 5
HELLO = "Hello from upstream."
CHAT = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def upstream():
    server = OpenAIUpstream(slow_seconds=1)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def web(web_pair):
    """Two web processes with 5 s deadlines."""
    return web_pair(BLAZE_REQUEST_TIMEOUT_SECONDS=str(DEADLINE))


@pytest.fixture(autouse=True)
def _fresh_counts(upstream):
    upstream.hits.clear()
    upstream.arrivals.clear()
    upstream.peak.clear()
    upstream.slow_seconds = 1


@pytest.fixture
def key(key_for):
    return key_for(make_user("app", "viewer"), scopes=("inference",))[1]


def capped(name, base_url, **caps):
    return Engine.objects.create(name=name, kind="llm", backend="remote", base_url=base_url, model="up", config=caps)


def ask(url, key, model):
    """(the response, the seconds it took)."""
    started = time.monotonic()
    response = httpx.post(f"{url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                          json={"model": model, **CHAT}, timeout=30)
    return response, time.monotonic() - started


def at_once(calls):
    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(lambda call: call(), calls))


def sample(name, **labels):
    """A metric summed over every process (the web processes included)."""
    metrics_published()
    return monitoring_selectors.registry().get_sample_value(name, labels) or 0


def logged(count, **filters):
    """The request log's newest `count` entries that match `filters` (request_log.entries')."""
    for _ in range(50):
        found = request_log.entries(**filters)
        if len(found) >= count:
            return found[:count]
        time.sleep(0.1)
    raise AssertionError(f"fewer than {count} requests with {filters} reached the log")


def test_the_rate_cap_holds_across_two_web_processes(web, upstream, key):
    capped("paced", upstream.base_url("ok"), max_rps=10)

    answers = at_once([lambda url=web[index % 2]: ask(url, key, "paced") for index in range(20)])

    assert [response.status_code for response, _ in answers] == [200] * 20
    arrived = sorted(at for behaviour, at in upstream.arrivals if behaviour == "ok")
    assert len(arrived) == 20
    # Ten a second, whichever process sent them: 0.1 s apart, as the slope of the arrival times fitted
    # over all 20 (an arrival 0.1 s off moves it by 0.0015 s at most); caps per process give 0.05.
    assert statistics.linear_regression(range(len(arrived)), arrived).slope >= 0.09
    # And evenly spaced: any 11 arrivals span a second, less the jitter between a permit and its
    # arrival on a busy machine (up to 0.17 s seen). Caps per process (20 a second) or a bucket that
    # bursts give 0.55 s or less.
    assert min(later - earlier for earlier, later in zip(arrived, arrived[10:])) >= 0.75


def test_the_concurrency_cap_holds_across_two_web_processes(web, upstream, key):
    upstream.slow_seconds = 0.4
    capped("narrow", upstream.base_url("slow"), max_concurrency=2)

    answers = at_once([lambda url=web[index % 2]: ask(url, key, "narrow") for index in range(6)])

    assert [response.status_code for response, _ in answers] == [200] * 6
    assert upstream.peak["slow"] == 2
    assert max(seconds for _, seconds in answers) >= 3 * 0.4 - 0.05  # three rounds of two


def test_a_request_over_the_cap_waits_for_a_slot_and_its_wait_is_measured(web, upstream, key):
    capped("single", upstream.base_url("slow"), max_concurrency=1)
    labels = {"engine": "single", "cap": "max_concurrency"}
    count, total = sample("blaze_outbound_wait_seconds_count", **labels), sample("blaze_outbound_wait_seconds_sum",
                                                                                   **labels)

    answers = at_once([lambda: ask(web[0], key, "single"), lambda: ask(web[1], key, "single")])

    assert [response.json()["choices"][0]["message"]["content"] for response, _ in answers] == ["late"] * 2
    assert upstream.peak["slow"] == 1
    assert 1.9 <= max(seconds for _, seconds in answers) < DEADLINE  # a second in line, a second answered
    assert sample("blaze_outbound_wait_seconds_count", **labels) == count + 2
    assert sample("blaze_outbound_wait_seconds_sum", **labels) - total >= 0.9
    assert max(entry.get("outbound_wait_seconds", 0) for entry in logged(2, engine="single")) >= 0.9


def test_a_full_host_hands_a_routes_request_to_its_next_target(web, upstream, key):
    upstream.slow_seconds = 2
    full = capped("full", upstream.base_url("slow"), max_concurrency=1)
    chat = Route.objects.create(name="chat", strategy="round_robin")
    for engine in (full, capped("spare", upstream.base_url("ok"))):
        RouteTarget.objects.create(route=chat, engine=engine)
    refused = sample("blaze_outbound_refused_total", engine="full", cap="max_concurrency")

    with ThreadPoolExecutor(1) as pool:
        holder = pool.submit(ask, web[0], key, "full")  # the host's one slot, for two seconds
        while upstream.hits["slow"] == 0:
            time.sleep(0.02)
        answers = [ask(web[1], key, "chat") for _ in range(2)]
        assert holder.result()[0].status_code == 200

    assert [response.json()["choices"][0]["message"]["content"] for response, _ in answers] == [HELLO] * 2
    assert all(seconds < 1.5 for _, seconds in answers)  # a brief wait for the full host, not its 2 s
    assert upstream.hits["slow"] == 1
    tries = [each for entry in logged(2, route="chat") for each in entry["attempts"] if each["engine"] == "full"]
    assert tries and {attempt["outcome"] for attempt in tries} == {"full"}
    assert "config.max_concurrency" in tries[0]["error"]
    assert sample("blaze_outbound_refused_total", engine="full", cap="max_concurrency") == refused + len(tries)
    assert breaker.CircuitBreaker("full").state() == breaker.CLOSED  # full is not failing


def test_a_turn_later_than_the_deadline_is_refused_at_once_naming_the_cap(web, upstream, key):
    capped("sparse", upstream.base_url("ok"), max_rps=0.1)  # one request every ten seconds

    first, _ = ask(web[0], key, "sparse")
    response, seconds = ask(web[1], key, "sparse")

    assert first.status_code == 200
    assert response.status_code == 503 and seconds < 1
    error = response.json()["error"]
    assert error["code"] == "outbound_limit"
    assert "0.1 requests a second (config.max_rps)" in error["message"]
    assert 5 <= int(response.headers["Retry-After"]) <= 10
    assert upstream.hits["ok"] == 1


HOLDER = """
import asyncio

import django

django.setup()
from engines.serving.resilience import outbound

outbound.LEASE_SECONDS = 1


async def hold():
    await outbound.OutboundLimit("held", max_concurrency=1).aslot(patience=5)
    print("holding", flush=True)
    await asyncio.sleep(60)


asyncio.run(hold())
"""


def test_a_killed_holders_slot_is_freed_when_its_lease_runs_out(web, upstream, key):
    capped("held", upstream.base_url("ok"), max_concurrency=1)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], cwd=ROOT, stdout=subprocess.PIPE,
                              env=server_env(DJANGO_SETTINGS_MODULE="blaze_site.settings"))
    try:
        assert holder.stdout.readline().strip() == b"holding"
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(ask, web[0], key, "held")
            time.sleep(1.5)  # longer than the holder's lease: it renews it while it lives
            assert not waiting.done() and upstream.hits["ok"] == 0
            holder.kill()
            killed = time.monotonic()
            response, _ = waiting.result()
            freed_after = time.monotonic() - killed
    finally:
        holder.kill()
        holder.wait()

    assert response.status_code == 200
    assert freed_after < 1.5  # the dead holder's one-second lease, then the waiter's next ask


def streaming(name, base_url):
    return Engine(name=name, kind="llm", backend="remote", base_url=base_url, model="up",
                  config={"max_concurrency": 1})


def test_a_stream_holds_its_slot_until_it_is_closed(upstream):
    engine = streaming("streamer", upstream.base_url("truncated"))  # two chunks, then nothing more
    held = shared_state.outbound_slot_keys("streamer")[0]

    async def two_streams():
        first, _ = await remote.forward(engine, "chat", {**CHAT, "stream": True}, deadline=DEADLINE, stream=True)
        second = asyncio.create_task(
            remote.forward(engine, "chat", {**CHAT, "stream": True}, deadline=DEADLINE, stream=True))
        await asyncio.sleep(0.3)
        waiting, holding = not second.done(), await shared_state.loop_client().zcard(held)
        first.close()  # as failover's relay does when a stream breaks off or the client leaves
        response, _ = await asyncio.wait_for(second, 1)
        response.close()
        await asyncio.sleep(0.05)
        return waiting, holding, await shared_state.loop_client().zcard(held)

    assert run(two_streams()) == (True, 1, 0)


def test_a_stream_read_to_its_end_gives_its_slot_back(upstream):
    engine = streaming("reader", upstream.base_url("ok"))

    async def read():
        response, _ = await remote.forward(engine, "chat", {**CHAT, "stream": True}, deadline=DEADLINE, stream=True)
        chunks = [chunk async for chunk in response.content.iter_any()]
        response.release()
        await asyncio.sleep(0.05)
        held = await shared_state.loop_client().zcard(shared_state.outbound_slot_keys("reader")[0])
        return b"[DONE]" in b"".join(chunks), held

    assert run(read()) == (True, 0)


def test_a_whole_answer_gives_its_slot_back_at_once(upstream):
    engine = streaming("whole", upstream.base_url("ok"))

    async def answer():
        response, _ = await remote.forward(engine, "chat", CHAT, deadline=DEADLINE)
        return response.status, await shared_state.loop_client().zcard(shared_state.outbound_slot_keys("whole")[0])

    assert run(answer()) == (200, 0)


def remote_body(**overrides):
    return {"name": "far", "kind": "llm", "backend": "remote", "base_url": "https://llm.example.com/v1",
            "model": "gpt-x", **overrides}


BAD_CAPS = [
    ({"max_rps": 0}, "config.max_rps"),
    ({"max_rps": -2}, "config.max_rps"),
    ({"max_rps": "fast"}, "config.max_rps"),
    ({"max_concurrency": 0}, "config.max_concurrency"),
    ({"max_concurrency": 1.5}, "config.max_concurrency"),
]


@pytest.mark.parametrize("caps, field", BAD_CAPS, ids=[str(caps) for caps, _ in BAD_CAPS])
def test_a_bad_cap_is_a_400_naming_it(client_for, operator_user, caps, field):
    response = client_for(operator_user).post("/api/engines/", remote_body(config=caps), format="json")
    assert response.status_code == 400
    assert field in response.json()["fields"] and response.json()["error"].startswith(field)
    assert not Engine.objects.exists()


def test_caps_are_kept_and_a_null_one_is_lifted(client_for, operator_user):
    api = client_for(operator_user)
    response = api.post("/api/engines/", remote_body(config={"max_rps": 5, "max_concurrency": 2}), format="json")
    assert response.status_code == 201
    assert (response.json()["config"]["max_rps"], response.json()["config"]["max_concurrency"]) == (5, 2)

    response = api.patch("/api/engines/far/", {"config": {"max_rps": None}}, format="json")

    assert response.status_code == 200
    assert "max_rps" not in response.json()["config"] and response.json()["config"]["max_concurrency"] == 2
    assert outbound.OutboundLimit.of(Engine.objects.get(name="far")).max_rps is None


def test_a_local_engine_has_no_caps(client_for, operator_user):
    response = client_for(operator_user).post(
        "/api/engines/", {"name": "tiny", "kind": "llm", "model": "tiny-llm", "config": {"max_concurrency": 2}},
        format="json")
    assert response.status_code == 400
    assert "remote engine" in response.json()["fields"]["config.max_concurrency"][0]
