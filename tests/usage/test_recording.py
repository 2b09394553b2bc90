"""Every served request leaves a usage record with the counts its answer gave: local engines (the
worker records), remote engines (the web process records), streams whether or not the client asked
for usage; and a web process SIGKILLed mid-stream loses no record (the worker that ran the request
records it)."""

import json
import time

import httpx
import pytest

from engines.models import Engine
from tests.conftest import make_user
from tests.servers import start_daphne
from usage import persist
from usage.models import UsageRecord

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CHAT = {"messages": [{"role": "user", "content": "the cat sat"}], "temperature": 0, "max_tokens": 12,
        "logit_bias": {"0": -100}}  # never the end-of-text token: every answer runs its max_tokens


def records_of(engine, count, timeout=30):
    """The engine's usage records, oldest first, once `count` are stored (this process drains too)."""
    deadline = time.monotonic() + timeout
    while True:
        persist.drain()
        records = list(UsageRecord.objects.filter(engine=engine).order_by("at"))
        if len(records) >= count or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def ask(base, key, body, path="chat/completions"):
    response = httpx.post(f"{base}/v1/{path}", json=body, timeout=120, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    return response.json()


def streamed(base, key, body):
    """The stream's content pieces and its usage chunk (None when not asked for)."""
    pieces, usage = [], None
    with httpx.stream("POST", f"{base}/v1/chat/completions", json={**body, "stream": True}, timeout=120,
                      headers={"Authorization": f"Bearer {key}"}) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                event = json.loads(line.removeprefix("data: "))
                usage = event.get("usage") or usage
                if event["choices"] and event["choices"][0]["delta"].get("content"):
                    pieces.append(event["choices"][0]["delta"]["content"])
    return pieces, usage


def test_local_and_remote_answers_and_streams_are_recorded_with_their_answers_counts(
        engine_worker, live_blaze, tiny_llm_path, upstream, key_for):
    Engine.objects.create(name="metered", kind="llm", model=tiny_llm_path, config={"max_new_tokens": 64})
    Engine.objects.create(name="metered-far", kind="llm", backend="remote", model="up",
                          base_url=upstream.base_url("ok"))
    user = make_user("metered-app", "viewer")
    key, raw = key_for(user, scopes=["inference"])

    answer = ask(live_blaze, raw, {"model": "metered", **CHAT})
    _, with_usage = streamed(live_blaze, raw, {"model": "metered", **CHAT, "stream_options": {"include_usage": True}})
    pieces, without_usage = streamed(live_blaze, raw, {"model": "metered", **CHAT})
    far = ask(live_blaze, raw, {"model": "metered-far", **CHAT})
    far_pieces, _ = streamed(live_blaze, raw, {"model": "metered-far", **CHAT})

    local = records_of("metered", 3)
    assert without_usage is None and pieces
    expected = (answer["usage"]["prompt_tokens"], answer["usage"]["completion_tokens"])
    assert expected == (with_usage["prompt_tokens"], with_usage["completion_tokens"]) and expected[1] == 12
    assert [(r.prompt_tokens, r.completion_tokens) for r in local] == [expected] * 3
    assert {(r.user_id, r.api_key_id, r.source, r.kind, r.worker, r.outcome) for r in local} == {
        (user.pk, key.pk, "v1", "chat", engine_worker.hostname, "answered")}
    assert all(r.worker_seconds > 0 for r in local)

    remote = records_of("metered-far", 2)
    # The host's JSON answer says its usage; its stream (not asked for usage) counts the chunks relayed.
    assert [(r.prompt_tokens, r.completion_tokens, r.worker) for r in remote] == [
        (far["usage"]["prompt_tokens"], far["usage"]["completion_tokens"], ""), (0, len(far_pieces), "")]


def test_a_web_process_killed_mid_stream_loses_no_record(engine_worker, tmp_path, tiny_llm_path, key_for):
    Engine.objects.create(name="metered-long", kind="llm", model=tiny_llm_path, config={"max_new_tokens": 512})
    _, raw = key_for(make_user("metered-long-app", "viewer"), scopes=["inference"])
    web = start_daphne(tmp_path)
    try:
        with httpx.stream("POST", f"{web.url}/v1/chat/completions", timeout=120,
                          headers={"Authorization": f"Bearer {raw}"},
                          json={"model": "metered-long", **CHAT, "max_tokens": 220, "stream": True}) as response:
            lines = response.iter_lines()
            while not next(lines).startswith('data: {"id"'):
                pass
            web.kill()  # mid-stream: the worker is still decoding, and nobody will tell it to stop
    except httpx.HTTPError:
        pass  # the connection went with the process
    finally:
        web.stop()
    [record] = records_of("metered-long", 1, timeout=60)
    assert (record.outcome, record.completion_tokens) == ("answered", 220)  # every token the worker decoded


def test_a_stream_its_client_leaves_records_what_the_worker_decoded_before_it_stopped(
        engine_worker, live_blaze, tiny_llm_path, key_for):
    Engine.objects.create(name="metered-left", kind="llm", model=tiny_llm_path, config={"max_new_tokens": 512})
    _, raw = key_for(make_user("metered-left-app", "viewer"), scopes=["inference"])
    slow = {**CHAT, "max_tokens": 220, "stream": True}
    with httpx.stream("POST", f"{live_blaze}/v1/chat/completions", json={"model": "metered-left", **slow},
                      timeout=120, headers={"Authorization": f"Bearer {raw}"}) as response:
        lines = response.iter_lines()
        while not next(lines).startswith('data: {"id"'):
            pass
    # The connection closed after the first chunk: the view is cancelled, the worker stops the row.
    [record] = records_of("metered-left", 1)
    assert record.outcome == "cancelled" and record.prompt_tokens > 0
    assert 0 < record.completion_tokens < 220


def test_a_budget_refuses_at_its_limit_with_the_room_left_in_a_header(live_blaze, upstream, key_for):
    from usage.models import Budget

    Engine.objects.create(name="budgeted-far", kind="llm", backend="remote", model="up",
                          base_url=upstream.base_url("ok"))
    key, raw = key_for(make_user("budgeted-app", "viewer"), scopes=["inference"])
    Budget.objects.create(name="three-a-day", scope="key", target_id=key.pk, metric="requests", period="day", limit=3)
    time.sleep(2.5)  # the web process reads budgets again after BLAZE_BUDGET_CACHE_SECONDS

    def send():
        return httpx.post(f"{live_blaze}/v1/chat/completions", json={"model": "budgeted-far", **CHAT}, timeout=60,
                          headers={"Authorization": f"Bearer {raw}"})

    answered = [send() for _ in range(3)]
    assert [(r.status_code, r.headers["x-blaze-budget-remaining"]) for r in answered] == [
        (200, "2"), (200, "1"), (200, "0")]
    refused = send()
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "budget_exceeded" and "Budget 'three-a-day'" in error["message"]
    assert "resets at" in error["message"]


def test_fifty_streams_at_once_against_room_for_ten_run_ten_and_record_their_tokens(
        engine_worker, live_blaze, tiny_llm_path, key_for):
    from concurrent.futures import ThreadPoolExecutor

    from usage.models import Budget

    Engine.objects.create(name="budgeted", kind="llm", model=tiny_llm_path,
                          config={"max_new_tokens": 64, "max_batch_size": 16})
    key, raw = key_for(make_user("budgeted-many", "viewer"), scopes=["inference"])
    Budget.objects.create(name="ten", scope="key", target_id=key.pk, metric="requests", period="total", limit=10)
    time.sleep(2.5)  # the web process reads budgets again after BLAZE_BUDGET_CACHE_SECONDS

    def one(seed):
        body = {"model": "budgeted", **CHAT, "seed": seed, "stream": True, "stream_options": {"include_usage": True}}
        with httpx.stream("POST", f"{live_blaze}/v1/chat/completions", json=body, timeout=120,
                          headers={"Authorization": f"Bearer {raw}"}) as response:
            if response.status_code != 200:
                response.read()
                return response.status_code, response.json()["error"]["code"]
            usage = None
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    usage = json.loads(line.removeprefix("data: ")).get("usage") or usage
            return 200, usage["prompt_tokens"] + usage["completion_tokens"]

    with ThreadPoolExecutor(50) as pool:
        outcomes = list(pool.map(one, range(50)))
    answered = [tokens for status, tokens in outcomes if status == 200]
    assert len(answered) == 10 and {outcome for outcome in outcomes if outcome[0] != 200} == {
        (429, "budget_exceeded")}
    records = records_of("budgeted", 10)
    assert sum(r.prompt_tokens + r.completion_tokens for r in records) == sum(answered)
