"""Fallback routes: when every target of a route has failed or is skipped, its fallbacks (routes or
engines) are tried in order, and an answer from one is marked — the X-Blaze-Fallback header, the
`blaze_route_fallbacks_total` counter, the request log. Against a live daphne and loopback upstreams
(tests/upstream.py) standing in for the remote hosts, healthy and dead."""

import asyncio
import json
import time

import httpx
import pytest

from accounts.audit import Actor
from core import errors
from dashboard import selectors as monitoring_selectors
from engines import services
from engines.models import Engine, Route, RouteFallback
from engines.serving import failover
from engines.serving.failover import serve
from engines.serving.plan import Plan, resolve
from engines.serving.request import InferenceRequest
from telemetry import request_log
from tests.conftest import make_user
from tests.servers import metrics_published
from tests.upstream import refused_base_url, run

pytestmark = pytest.mark.django_db(transaction=True)
ACTOR = Actor.system("test")
HELLO = "Hello from upstream."
CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
FAST_RETRIES = {"BLAZE_RETRY_BASE_SECONDS": "0.01", "BLAZE_RETRY_MAX_DELAY_SECONDS": "0.05"}


@pytest.fixture(scope="module")
def web(django_db_setup, django_db_blocker, tmp_path_factory):
    """daphne whose retries of a dead host wait milliseconds, not seconds."""
    from tests.servers import start_daphne

    with django_db_blocker.unblock():
        process = start_daphne(tmp_path_factory.mktemp("fallbacks"), **FAST_RETRIES)
    yield process.url
    process.stop()


@pytest.fixture
def key(key_for):
    return key_for(make_user("app", "viewer"), scopes=("inference",))[1]


def remote(name, base_url, model="up"):
    return services.engine_create(actor=ACTOR, name=name, kind="llm", backend="remote", model=model,
                                  base_url=base_url)


def route(name, *targets, fallbacks=()):
    """A route over `targets` (engines, or (engine, pinned worker)), then its fallbacks by name."""
    made = services.route_create(actor=ACTOR, name=name)
    for target in targets:
        engine, worker = target if isinstance(target, tuple) else (target, "")
        services.route_target_add(actor=ACTOR, route=made, engine=engine, worker=worker)
    if fallbacks:
        services.route_update(actor=ACTOR, route=made, fallbacks=list(fallbacks))
    return made


def ask(web, key, body=CHAT):
    return httpx.post(f"{web}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, json=body,
                      timeout=30)


def counted(route_name, fallback):
    """blaze_route_fallbacks_total{route, fallback}, summed over every process."""
    metrics_published()
    value = monitoring_selectors.registry().get_sample_value(
        "blaze_route_fallbacks_total", {"route": route_name, "fallback": fallback})
    return value or 0


def logged(route_name):
    for _ in range(50):
        found = request_log.entries(route=route_name)
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"no request for {route_name} reached the log")


def test_local_replicas_down_and_a_dead_host_answer_through_the_fallback_marked(web, upstream, key, client):
    tiny = services.engine_create(actor=ACTOR, name="tiny", kind="llm", model="tiny-llm")
    remote("far", upstream.base_url("ok"))
    route("chat", (tiny, "gpu-1"), remote("dead", upstream.base_url("fail")), fallbacks=["far"])
    before = counted("chat", "far")

    response = ask(web, key)

    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == HELLO
    assert response.headers["X-Blaze-Fallback"] == "far"
    assert upstream.hits["fail"] >= 1  # the route's own host was tried first
    assert counted("chat", "far") == before + 1
    entry = logged("chat")
    assert (entry["fallback"], entry["status"]) == ("far", 200)
    assert entry["skipped"]["tiny@gpu-1"] == "worker gpu-1 is not running"
    client.force_login(make_user("olga", "operator"))
    assert "answered by fallback far" in client.get(f"/requests/{entry['id']}/").content.decode()
    assert "fallback far" in client.get("/requests/").content.decode()


def test_an_answer_of_the_routes_own_target_is_not_marked(web, upstream, key):
    remote("far", upstream.base_url("ok"))
    route("chat", remote("near", upstream.base_url("ok"), model="near-model"), fallbacks=["far"])
    before = counted("chat", "far")

    response = ask(web, key)

    assert response.status_code == 200 and "X-Blaze-Fallback" not in response.headers
    assert [body["model"] for body in upstream.bodies] == ["near-model"]
    assert counted("chat", "far") == before
    assert "fallback" not in logged("chat")


def test_a_streamed_answer_from_a_fallback_route_is_marked(web, upstream, key):
    route("backup", remote("far", upstream.base_url("ok")))
    route("chat", remote("dead", refused_base_url()), fallbacks=["backup"])
    body = {**CHAT, "stream": True}

    with httpx.stream("POST", f"{web}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, json=body,
                      timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["X-Blaze-Fallback"] == "backup"
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]

    chunks = [json.loads(event) for event in events if event != "[DONE]"]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == HELLO


def test_the_clients_own_error_is_its_answer_and_never_goes_to_a_fallback(web, upstream, key):
    remote("far", upstream.base_url("ok"))
    route("chat", remote("picky", upstream.base_url("bad")), fallbacks=["far"])
    before = counted("chat", "far")

    response = ask(web, key)

    assert response.status_code == 400 and response.json()["error"]["param"] == "max_tokens"
    assert "X-Blaze-Fallback" not in response.headers
    assert (upstream.hits["bad"], upstream.hits["ok"]) == (1, 0)
    assert counted("chat", "far") == before


def test_a_fallback_route_falls_back_in_turn_and_a_disabled_fallback_is_passed_over(web, upstream, key):
    off = remote("off", upstream.base_url("ok"), model="off-model")
    services.engine_set_enabled(actor=ACTOR, engine=off, enabled=False)
    remote("far", upstream.base_url("ok"))
    route("backup", remote("dead-too", upstream.base_url("fail")), fallbacks=["far"])
    route("chat", remote("dead", upstream.base_url("fail")), fallbacks=["off", "backup"])
    before = counted("chat", "backup"), counted("backup", "far")

    response = ask(web, key)

    assert response.status_code == 200 and response.headers["X-Blaze-Fallback"] == "backup"
    assert (counted("chat", "backup"), counted("backup", "far")) == (before[0] + 1, before[1] + 1)
    assert "off-model" not in [body["model"] for body in upstream.bodies]


def test_when_every_fallback_fails_too_the_503_says_why_for_each(web, upstream, key):
    route("backup", remote("gone", refused_base_url()))
    remote("also-dead", upstream.base_url("fail"))
    route("chat", remote("dead", upstream.base_url("fail")), fallbacks=["backup", "also-dead"])

    response = ask(web, key)

    assert response.status_code == 503 and "X-Blaze-Fallback" not in response.headers
    error = response.json()["error"]
    assert error["code"] == "no_target_available"
    message = error["message"]
    assert message.startswith("Neither route 'chat' nor its fallbacks could answer (")
    assert "chat: No target of route 'chat' is available (dead: The upstream answered HTTP 500" in message
    assert "backup: No target of route 'backup' is available (gone: The host could not be reached" in message
    assert "also-dead: The upstream answered HTTP 500" in message


def test_a_loop_two_edits_made_at_once_ends_instead_of_going_round(upstream, settings):
    for name, value in FAST_RETRIES.items():
        setattr(settings, name, float(value))
    route("backup", remote("dead-b", upstream.base_url("fail")))
    route("chat", remote("dead-a", upstream.base_url("fail")), fallbacks=["backup"])
    # The rules refuse backup → chat; two operators saving at once could still make it.
    RouteFallback.objects.create(route=Route.objects.get(name="backup"), position=0,
                                 route_fallback=Route.objects.get(name="chat"))

    with pytest.raises(errors.Unavailable) as refused:
        run(serve(InferenceRequest("chat", CHAT, plan=resolve("chat", "llm"), data={"payload": {}})))

    assert "backup: Neither route 'backup' nor its fallbacks could answer" in str(refused.value)
    assert "chat: a loop (chat → backup → chat)" in str(refused.value)
    assert upstream.hits["fail"] == 2 * settings.BLAZE_RETRY_ATTEMPTS  # each route's host, once per request


def test_a_route_with_no_targets_of_its_own_serves_from_its_fallbacks(web, upstream, key):
    remote("far", upstream.base_url("ok"))
    services.route_create(actor=ACTOR, name="chat", fallbacks=["far"])

    response = ask(web, key)

    assert response.status_code == 200 and response.headers["X-Blaze-Fallback"] == "far"


@pytest.mark.slow
def test_a_local_engine_as_the_fallback_streams_marked(web, key, engine_worker, tiny_llm_path):
    tiny = Engine.objects.create(name="tiny", kind="llm", model=tiny_llm_path, config={"max_new_tokens": 16})
    route("chat", remote("dead", refused_base_url()), fallbacks=[tiny.name])
    body = {**CHAT, "stream": True, "max_tokens": 4}

    with httpx.stream("POST", f"{web}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, json=body,
                      timeout=120) as response:
        assert response.status_code == 200 and response.headers["X-Blaze-Fallback"] == "tiny"
        events = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]

    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert chunks[-1]["choices"][0]["finish_reason"] in ("length", "stop") and "error" not in chunks[-1]


@pytest.mark.slow
def test_a_local_engines_refusal_of_the_prompt_is_the_clients_answer_not_the_fallbacks(
        web, upstream, key, engine_worker, tiny_llm_path):
    tiny = Engine.objects.create(name="tiny-refusing", kind="llm", model=tiny_llm_path)
    remote("far", upstream.base_url("ok"))
    route("chat", tiny, fallbacks=["far"])
    too_long = {**CHAT, "messages": [{"role": "user", "content": "word " * 400}]}  # the tiny model reads 256 tokens

    response = ask(web, key, too_long)

    assert response.status_code == 400 and response.json()["error"]["param"] == "messages"
    assert "reads at most 256 tokens" in response.json()["error"]["message"]
    assert "X-Blaze-Fallback" not in response.headers and upstream.hits["ok"] == 0


def test_a_route_whose_targets_and_fallbacks_are_all_full_answers_full_not_down():
    def route(*down):
        backup, spare = Plan(name="backup", engine=None), Plan(name="spare", engine=None)
        primary = Plan(name="chat", engine=None, fallbacks=(backup, spare))

        async def own(plan):
            if plan.name in down:
                raise errors.UpstreamFailed(f"{plan.name} is down")
            raise errors.QueueFull(f"{plan.name} is full", retry_after={"chat": 5, "backup": 2, "spare": 3}[plan.name])

        return asyncio.run(failover._with_fallbacks(primary, own, time.monotonic() + 5, set()))

    with pytest.raises(errors.QueueFull) as full:
        route()
    assert full.value.retry_after == 2 and "all full" in full.value.message  # the soonest a place frees
    with pytest.raises(errors.Unavailable) as down:
        route("spare")  # one of them is down, not full: the route cannot answer
    assert not isinstance(down.value, errors.Overloaded)
