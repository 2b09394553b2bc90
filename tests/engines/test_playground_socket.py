"""The playground's socket (engines/playground/consumers.py) without a browser: answers stream with
their stats, prompts count against the same rate limits as /v1 for the signed-in user, bad input is
answered inline naming the field, and nobody signed out gets in. A remote engine on a loopback
upstream answers, so no worker is needed."""

import asyncio
import base64
import json
import time

import jsonschema
import pytest
from channels.testing import WebsocketCommunicator
from django.test import Client

from accounts.audit import Actor
from blaze_site.asgi import application
from engines import services
from ratelimits import selectors as ratelimit_selectors
from ratelimits import services as ratelimit_services
from telemetry import request_log
from tests.conftest import make_user
from tests.upstream import run

pytestmark = pytest.mark.django_db(transaction=True)
HI = [{"role": "user", "content": "Hi"}]
# Strings and arrays bounded, so that the tiny random model's answer ends within max_tokens.
PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 8}, "n": {"type": "integer"},
                                           "tags": {"type": "array", "items": {"type": "string", "maxLength": 4},
                                                    "maxItems": 2}},
          "required": ["name", "n"], "additionalProperties": False}
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city.",
                                            "parameters": {"type": "object", "properties": {
                                                "city": {"type": "string", "maxLength": 12}},
                                                "required": ["city"], "additionalProperties": False}}}


@pytest.fixture
def far(upstream):
    return services.engine_create(actor=Actor.system("test"), name="far", kind="llm", backend="remote", model="up",
                                  base_url=upstream.base_url("ok"), config={"max_new_tokens": 64})


def signed_in(user):
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


def playground(cookie=None):
    headers = [(b"origin", b"http://localhost"), (b"host", b"localhost")]
    if cookie is not None:
        headers.append((b"cookie", cookie.encode()))
    return WebsocketCommunicator(application, "/ws/playground/", headers=headers)


async def answer(socket, message):
    """The messages for `message`'s id, up to its last (done, error or stopped)."""
    await socket.send_json_to(message)
    received = []
    while not received or received[-1]["type"] not in ("done", "error", "stopped", "similarity", "images"):
        reply = await socket.receive_json_from(timeout=10)
        if reply["id"] == message["id"]:
            received.append(reply)
    return received


def conversation(user, *messages, settle=0.0):
    """What the playground answered each of `messages`, over one socket (kept open `settle` seconds more)."""
    cookie = signed_in(user)

    async def talk():
        socket = playground(cookie)
        connected, _ = await socket.connect()
        assert connected
        try:
            return [await answer(socket, message) for message in messages]
        finally:
            await asyncio.sleep(settle)
            await socket.disconnect()

    return run(talk())


def test_an_answer_streams_as_tokens_then_its_stats_name_the_target(far):
    [replies] = conversation(make_user("vera", "viewer"), {"type": "chat", "id": "1", "model": "far", "messages": HI})
    tokens, done = replies[:-1], replies[-1]
    assert [t["type"] for t in tokens] == ["token"] * len(tokens) and len(tokens) > 1
    assert "".join(t["text"] for t in tokens) == "Hello from upstream."
    assert done["type"] == "done" and done["stats"]["target"] == "far" and done["stats"]["ttft_ms"] is not None


def test_a_route_that_keeps_prompts_logs_the_playground_s_prompt_and_answer(far):
    actor = Actor.system("test")
    route = services.route_create(actor=actor, name="chat", keep_prompts=True)
    services.route_target_add(actor=actor, route=route, engine=far)
    conversation(make_user("vera", "viewer"), {"type": "chat", "id": "1", "model": "chat", "messages": HI},
                 settle=0.5)  # the log is written a moment after the answer
    [entry] = request_log.entries(route="chat")
    assert (entry["client"], entry["status"]) == ("user vera (playground)", 200)
    assert (entry["prompt"], entry["answer"]) == ("user: Hi", "Hello from upstream.")


def test_an_answer_from_a_routes_fallback_says_so_in_its_stats(far, upstream):
    actor = Actor.system("test")
    route = services.route_create(actor=actor, name="chat")
    dead = services.engine_create(actor=actor, name="dead", kind="llm", backend="remote", model="up",
                                  base_url=upstream.base_url("fail"))
    services.route_target_add(actor=actor, route=route, engine=dead)
    services.route_update(actor=actor, route=route, fallbacks=["far"])
    [replies] = conversation(make_user("vera", "viewer"), {"type": "chat", "id": "1", "model": "chat", "messages": HI})
    done = replies[-1]
    assert done["type"] == "done" and "".join(r["text"] for r in replies[:-1]) == "Hello from upstream."
    assert (done["stats"]["fallback"], done["stats"]["target"]) == ("far", "far")


def test_prompts_count_against_the_same_per_user_limit_as_v1(far, key_for):
    vera = make_user("vera", "viewer")
    ratelimit_services.policy_create(actor=Actor.system("test"), name="chat per user", scope="user",
                                     endpoint="/v1/chat/completions", algorithm="fixed_window", limit=2,
                                     period_seconds=60)
    ratelimit_selectors.forget_active_policies()
    _, raw = key_for(vera, scopes=("inference",))
    api = Client(headers={"Authorization": f"Bearer {raw}"})
    chat = {"model": "far", "messages": HI}

    [first] = conversation(vera, {"type": "chat", "id": "1", **chat})
    assert first[-1]["type"] == "done"
    assert api.post("/v1/chat/completions", chat, content_type="application/json").status_code == 200
    [refused] = conversation(vera, {"type": "chat", "id": "2", **chat})  # vera's third chat, by either way
    assert refused == [{"type": "error", "id": "2", "field": None,
                        "message": refused[0]["message"]}]
    assert refused[0]["message"].startswith("Rate limit exceeded (chat per user: 2 requests per 60 s)")
    assert api.post("/v1/chat/completions", chat, content_type="application/json").status_code == 429
    [others] = conversation(make_user("otto", "viewer"), {"type": "chat", "id": "3", **chat})
    assert others[-1]["type"] == "done"  # another user's count is their own


@pytest.mark.parametrize(("message", "field", "words"), [
    ({"type": "chat", "model": "far", "messages": []}, "messages", ""),
    ({"type": "chat", "model": "far", "messages": HI, "max_tokens": 100_000}, "max_tokens", "64"),
    ({"type": "chat", "model": "nowhere", "messages": HI}, "model", "nowhere"),
    ({"type": "chat", "model": "far", "messages": HI, "temperature": 9}, "temperature", ""),
    ({"type": "embed", "model": "far", "texts": ["only one"]}, "texts", "2 to 16"),
    ({"type": "embed", "model": "far", "texts": ["a", "b"]}, "model", "far"),  # not an embedding engine
    ({"type": "dance"}, "type", "expected chat"),
    ({"type": "chat", "model": "far", "messages": HI, "tools": '[{"type": "function"'}, "tools", "a list"),
    ({"type": "chat", "model": "far", "messages": HI, "tools": [{"type": "function"}]}, "tools.0.function", ""),
    ({"type": "chat", "model": "far", "messages": HI, "tool_choice": "required"}, "tool_choice", "no tools"),
    ({"type": "chat", "model": "far", "messages": HI, "response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "nothing"}}}}, "response_format.json_schema.schema", "Not a valid JSON schema"),
])
def test_bad_input_is_answered_inline_naming_the_field(far, message, field, words):
    [replies] = conversation(make_user("vera", "viewer"), {"id": "1", **message})
    [error] = replies
    assert error["type"] == "error" and error["field"] == field and words in error["message"], error


@pytest.mark.slow
def test_a_json_schema_answer_parses_and_validates(engine_worker, tiny_llm_path):
    # A name of its own: the session's worker may hold another test's tiny-json, and this one starts cold.
    services.engine_create(actor=Actor.system("test"), name="tiny-json-socket", kind="llm", model=tiny_llm_path,
                           config={"max_new_tokens": 128})
    [replies] = conversation(make_user("vera", "viewer"), {
        "type": "chat", "id": "1", "model": "tiny-json-socket", "messages": [{"role": "user", "content": "A person?"}],
        "temperature": 0, "max_tokens": 120,
        "response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}})
    loading, *tokens, done = replies
    assert loading["type"] == "loading" and loading["message"].startswith("loading tiny-json-socket on ")  # cold
    assert done["type"] == "done" and done["finish_reason"] == "stop", done
    assert done["json_valid"] is True and done["tool_calls"] == []
    assert done["content"] == "".join(r["text"] for r in tokens)  # what streamed is the answer
    jsonschema.validate(json.loads(done["content"]), PERSON)


@pytest.mark.slow
def test_a_forced_tool_call_arrives_parsed_and_can_be_answered_by_a_tool_turn(engine_worker, smollm2_path):
    # SmolLM2: the tools' system message alone is longer than the tiny model's 256-token context.
    services.engine_create(actor=Actor.system("test"), name="smol-tools", kind="llm", model=smollm2_path,
                           config={"max_new_tokens": 128})
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    chat = {"type": "chat", "model": "smol-tools", "temperature": 0, "max_tokens": 60, "tools": [WEATHER],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}
    [first] = conversation(make_user("vera", "viewer"), {"id": "1", **chat, "messages": ask})
    done = first[-1]
    assert done["type"] == "done" and done["finish_reason"] == "tool_calls", done
    [call] = done["tool_calls"]
    assert call["name"] == "get_weather" and call["id"].startswith("call_") and done["content"] is None
    jsonschema.validate(json.loads(call["arguments"]), WEATHER["function"]["parameters"])

    turn = {"role": "assistant", "content": None, "tool_calls": [
        {"id": call["id"], "type": "function", "function": {"name": call["name"], "arguments": call["arguments"]}}]}
    answered = {"role": "tool", "tool_call_id": call["id"], "content": '{"sky": "clear"}'}
    [second] = conversation(make_user("otto", "viewer"), {"id": "2", **chat, "tool_choice": "none",
                                                          "messages": [*ask, turn, answered]})
    assert second[-1]["type"] == "done" and second[-1]["tool_calls"] == []


def test_a_remote_host_s_streamed_tool_call_is_put_together(upstream):
    services.engine_create(actor=Actor.system("test"), name="far-tools", kind="llm", backend="remote", model="up",
                           base_url=upstream.base_url("tools"))
    [replies] = conversation(make_user("vera", "viewer"), {"type": "chat", "id": "1", "model": "far-tools",
                                                           "messages": HI, "tools": [WEATHER]})
    done = replies[-1]
    assert done["type"] == "done" and done["finish_reason"] == "tool_calls", done
    assert [(c["name"], json.loads(c["arguments"])) for c in done["tool_calls"]] == [("get_weather", {"city": "Paris"})]


def test_stop_while_a_delay_policy_holds_the_prompt_stops_it(far):
    ratelimit_services.policy_create(actor=Actor.system("test"), name="slow lane", scope="user",
                                     endpoint="/v1/chat/completions", algorithm="fixed_window", limit=1,
                                     period_seconds=10, action="delay", max_delay=20)
    ratelimit_selectors.forget_active_policies()
    cookie = signed_in(make_user("vera", "viewer"))

    async def talk():
        socket = playground(cookie)
        await socket.connect()
        first = await answer(socket, {"type": "chat", "id": "1", "model": "far", "messages": HI})
        await socket.send_json_to({"type": "chat", "id": "2", "model": "far", "messages": HI})
        await asyncio.sleep(0.5)  # waiting for its turn, up to 10 s
        stopped = await answer(socket, {"type": "stop", "id": "2"})
        await socket.disconnect()
        return first, stopped

    first, stopped = run(talk())
    assert first[-1]["type"] == "done" and stopped == [{"type": "stopped", "id": "2"}]


def test_a_signed_out_socket_is_refused():
    async def knock():
        connected, code = await playground().connect()
        return connected, code

    assert run(knock()) == (False, 4403)


@pytest.mark.slow
def test_a_socket_dropped_mid_stream_frees_the_worker_s_slot(engine_worker, smollm2_path):
    from engines.heartbeats import worker_info

    services.engine_create(actor=Actor.system("test"), name="smol-drop", kind="llm", model=smollm2_path,
                           config={"max_new_tokens": 512})
    cookie = signed_in(make_user("vera", "viewer"))

    async def drop_mid_stream():
        socket = playground(cookie)
        await socket.connect()
        await socket.send_json_to({"type": "chat", "id": "1", "model": "smol-drop", "max_tokens": 400,
                                   "messages": [{"role": "user", "content": "Tell a long story."}]})
        first = await socket.receive_json_from(timeout=10)  # the model loads first: the page is told so
        assert first["type"] == "loading", first
        first = await socket.receive_json_from(timeout=120)
        busy = worker_info(engine_worker.hostname)["in_flight"]
        await socket.disconnect()  # the tab closes
        dropped = time.monotonic()
        while worker_info(engine_worker.hostname)["in_flight"] and time.monotonic() - dropped < 5:
            await asyncio.sleep(0.1)
        return first, busy, time.monotonic() - dropped

    first, busy, freed_after = run(drop_mid_stream())
    assert first["type"] == "token" and busy == 1
    assert freed_after < 2  # the worker let go of it (its heartbeat runs every 0.5 s here)


def test_an_image_too_large_or_unreadable_is_refused_naming_the_field(tiny_diffusion_path, monkeypatch):
    from engines.openai.protocol import ImageInputField

    services.engine_create(actor=Actor.system("test"), name="paint", kind="diffusion", model=tiny_diffusion_path)
    monkeypatch.setattr(ImageInputField, "MAX_BYTES", 1024)
    big = "data:image/png;base64," + base64.b64encode(b"\0" * 2048).decode()
    image = {"type": "image", "model": "paint", "prompt": "a cat", "size": "64x64"}
    [[too_large], [unreadable]] = conversation(make_user("vera", "viewer"), {"id": "1", **image, "image": big},
                                               {"id": "2", **image, "image": "data:image/png;base64,aGVsbG8="})
    assert too_large["field"] == "image" and too_large["message"].startswith("image: The image is larger than")
    assert (unreadable["field"], unreadable["message"]) == ("image", "image: Not a readable image (PNG or JPEG).")


def test_a_prompt_is_recorded_as_its_user_s_playground_usage(far):
    from usage import persist
    from usage.models import UsageRecord

    user = make_user("metered-vera", "viewer")
    [replies] = conversation(user, {"type": "chat", "id": "1", "model": "far", "messages": HI})
    pieces = [reply for reply in replies if reply["type"] == "token"]
    persist.drain()  # (earlier tests' events too: this one's is told apart by its user)
    record = UsageRecord.objects.get(engine="far", user_id=user.pk)
    # The host's stream carried no usage: the chunks it sent count, one token each.
    assert (record.source, record.user_id, record.api_key_id, record.kind, record.completion_tokens) == (
        "playground", user.pk, None, "chat", len(pieces))


def test_a_prompt_over_its_user_s_budget_is_refused_inline_naming_the_budget(far):
    from usage import budgets
    from usage import services as usage_services

    vera = make_user("budgeted-vera", "viewer")
    usage_services.budget_create(actor=Actor.system("test"), name="vera-one-a-day", scope="user", target_id=vera.pk,
                                 metric="requests", period="day", limit=1)
    budgets.forget()
    try:
        chat = {"type": "chat", "model": "far", "messages": HI}
        first, second = conversation(vera, {"id": "1", **chat}, {"id": "2", **chat})
    finally:
        budgets.forget()
    assert first[-1]["type"] == "done"
    [refused] = second
    assert refused["type"] == "error" and refused["message"].startswith(
        "Budget 'vera-one-a-day' (1 requests per day) has no room for this request; it resets at ")
