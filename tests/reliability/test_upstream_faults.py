"""A remote host that hangs, resets connections, answers garbage or cuts its answer short: the route
fails over to its healthy target, the faulty one's breaker opens, nothing hangs past the deadline, and
what cannot be saved (a stream already under way) ends with a clean error the client can read."""

import json
import time

import httpx
import pytest

from accounts import services as account_services
from accounts.audit import Actor
from engines import services
from engines.serving.resilience.breaker import CircuitBreaker
from tests.conftest import make_user
from tests.servers import start_daphne
from tests.upstream import OpenAIUpstream

pytestmark = [pytest.mark.reliability, pytest.mark.slow, pytest.mark.django_db(transaction=True)]
READ_TIMEOUT, DEADLINE = 2, 10


@pytest.fixture(scope="module")
def web(django_db_setup, django_db_blocker, tmp_path_factory):
    """daphne with short upstream timeouts: a hung host is given up in READ_TIMEOUT seconds."""
    with django_db_blocker.unblock():
        process = start_daphne(tmp_path_factory.mktemp("faults"), BLAZE_UPSTREAM_READ_TIMEOUT=str(READ_TIMEOUT),
                               BLAZE_REQUEST_TIMEOUT_SECONDS=str(DEADLINE))
    yield process
    process.stop()


@pytest.fixture(scope="module")
def upstream():
    server = OpenAIUpstream(slow_seconds=30)  # "slow": hangs far past the read timeout
    yield server
    server.stop()


@pytest.fixture
def key():
    _, raw = account_services.api_key_create(actor=Actor.system("test"), user=make_user("app", "viewer"),
                                             name="app", scopes=["inference"])
    return {"Authorization": f"Bearer {raw}"}


def route_over(upstream, fault):
    """A round-robin route `chat` over a faulty host and a healthy one."""
    actor = Actor.system("test")
    route = services.route_create(actor=actor, name="chat", strategy="round_robin")
    for name, behaviour in (("faulty", fault), ("healthy", "ok")):
        engine = services.engine_create(actor=actor, name=name, kind="llm", backend="remote", model="up",
                                        base_url=upstream.base_url(behaviour))
        services.route_target_add(actor=actor, route=route, engine=engine)
    return route


def ask(web, key, stream=False):
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    started = time.monotonic()
    response = httpx.post(f"{web.url}/v1/chat/completions", json=body, headers=key, timeout=DEADLINE + 20)
    return response, time.monotonic() - started


@pytest.mark.parametrize("fault", ["slow", "reset", "garbage", "truncated", "fail"])
def test_the_route_fails_over_and_the_faulty_host_s_breaker_opens(web, upstream, key, fault):
    route_over(upstream, fault)
    answers = [ask(web, key) for _ in range(12)]
    assert [response.status_code for response, _ in answers] == [200] * 12, [r.text for r, _ in answers]
    assert all(response.json()["choices"][0]["message"]["content"] == "Hello from upstream."
               for response, _ in answers)
    assert max(seconds for _, seconds in answers) < DEADLINE
    assert CircuitBreaker("faulty").snapshot()["state"] == "open"
    hits = upstream.hits[fault]
    ask(web, key)
    assert upstream.hits[fault] == hits  # open: the faulty host is no longer tried


def test_a_stream_cut_short_upstream_ends_with_an_error_event(web, upstream, key):
    actor = Actor.system("test")
    services.engine_create(actor=actor, name="chat", kind="llm", backend="remote", model="up",
                           base_url=upstream.base_url("truncated"))
    response, seconds = ask(web, key, stream=True)
    assert response.status_code == 200 and seconds < DEADLINE  # the stream had begun: its status was sent
    events = [line.removeprefix("data: ") for line in response.text.splitlines() if line.startswith("data: ")]
    pieces = [json.loads(event) for event in events if event != "[DONE]"]
    assert "".join(p["choices"][0]["delta"].get("content") or "" for p in pieces if "choices" in p) == "Hello from"
    assert pieces[-1]["error"]["type"] == "server_error" and "upstream" in pieces[-1]["error"]["message"].lower()
