"""The Requests page's log (telemetry/request_log.py): each /v1 request's story, kept in Redis, against
a live daphne and loopback upstreams."""

import time

import httpx
import pytest

from accounts.audit import Actor
from engines import services
from telemetry import request_log
from tests.conftest import make_user

pytestmark = pytest.mark.django_db(transaction=True)
CHAT = {"model": "chat", "messages": [{"role": "user", "content": "What is the secret plan?"}]}


@pytest.fixture
def route(upstream):
    actor = Actor.system("test")
    route = services.route_create(actor=actor, name="chat", strategy="round_robin")
    for name, behaviour in (("broken", "fail"), ("good", "ok"), ("off", "ok")):
        engine = services.engine_create(actor=actor, name=name, kind="llm", backend="remote",
                                        base_url=upstream.base_url(behaviour))
        services.route_target_add(actor=actor, route=route, engine=engine, enabled=name != "off")
    return route


@pytest.fixture
def key(key_for):
    return key_for(make_user("app", "viewer"), scopes=("inference",))


def ask(base, raw, body=CHAT):
    return httpx.post(f"{base}/v1/chat/completions", headers={"Authorization": f"Bearer {raw}"}, json=body, timeout=30)


def logged(count=1, **filters):
    for _ in range(50):
        found = request_log.entries(**filters)
        if len(found) >= count:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{count} entries never reached the log: {found}")


def test_a_request_s_story_names_the_failover_the_skipped_target_and_the_key(live_blaze, route, key):
    api_key, raw = key
    assert ask(live_blaze, raw).status_code == 200
    [entry] = logged(route="chat")
    assert (entry["model"], entry["route"], entry["status"], entry["client"]) == ("chat", "chat", 200, str(api_key))
    assert [(a["engine"], a["outcome"]) for a in entry["attempts"]] == [("broken", "failed"), ("good", "answered")]
    assert "500" in entry["attempts"][0]["error"]
    assert entry["skipped"] == {"off": "target disabled"}
    assert "prompt" not in entry and "answer" not in entry  # not kept unless the route says so


def test_a_route_that_keeps_prompts_shows_what_was_asked_and_answered(live_blaze, route, key):
    services.route_update(actor=Actor.system("test"), route=route, keep_prompts=True)
    assert ask(live_blaze, key[1]).status_code == 200
    [entry] = logged(route="chat")
    assert entry["prompt"] == "user: What is the secret plan?" and entry["answer"] == "Hello from upstream."
    assert key[1] not in str(entry)  # never the key


def test_the_page_filters_by_status_and_a_row_opens_the_request(live_blaze, route, key, client):
    ask(live_blaze, key[1])
    ask(live_blaze, key[1], {**CHAT, "model": "nope"})
    logged(route="chat")
    logged(status="404")
    client.force_login(make_user("olga", "operator"))
    listing = client.get("/requests/?status=4xx").content.decode()
    assert ">404<" in listing and ">200<" not in listing
    [ok] = request_log.entries(status="2xx", route="chat")  # (a request of an earlier test may flush late)
    story = client.get(f"/requests/{ok['id']}/").content.decode()
    assert "broken" in story and "answered" in story and "target disabled" in story


def test_the_tokens_a_host_reports_are_logged_and_shown_with_those_its_cache_supplied(live_blaze, route, key,
                                                                                      client_for, client):
    answer = ask(live_blaze, key[1])
    usage = answer.json()["usage"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": 2}  # relayed as the host sent it
    [entry] = logged(route="chat")
    assert (entry["tokens"], entry["prompt_tokens"], entry["cached_tokens"]) == (
        usage["completion_tokens"], 3, 2)
    viewer = make_user("vi", "viewer")
    [listed] = client_for(viewer).get("/api/requests/?route=chat").json()["requests"]
    assert listed["cached_tokens"] == 2
    client.force_login(viewer)
    assert "· 2 cached" in client.get("/requests/").content.decode()
    story = client.get(f"/requests/{entry['id']}/").content.decode()
    assert f"{usage['completion_tokens']} generated · prompt 3, 2 of them cached" in story


def test_the_api_refuses_a_status_it_cannot_read(client_for):
    response = client_for(make_user("vi", "viewer")).get("/api/requests/?status=bad")
    assert response.status_code == 400 and list(response.json()["fields"]) == ["status"]
