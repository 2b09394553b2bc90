"""A worker SIGKILLed while it holds requests of every kind (chats, streams, images): its last heartbeat
shows it held them all, and another live worker answers every one, each stream resuming where it was
cut with no token lost or repeated (the same seed: its text equals the uninterrupted answer)."""

import concurrent.futures
import json
import time

import httpx
import pytest

from engines.heartbeats import worker_info
from engines.models import Engine
from telemetry import request_log

pytestmark = [pytest.mark.reliability, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

STREAMS, IMAGES = 3, 3
N = 2 * STREAMS + IMAGES  # each stream has a non-streamed twin: the same request, answered whole


def post(base, key, path, body):
    response = httpx.post(f"{base}/v1/{path}", json=body, timeout=120, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    return response.json()


def stream(base, key, body, pieces):
    """The streamed chat's text, its content pieces appended to `pieces` as they come; fails on an
    error event or a stream that ends without [DONE]."""
    with httpx.stream("POST", f"{base}/v1/chat/completions", json={**body, "stream": True}, timeout=120,
                      headers={"Authorization": f"Bearer {key}"}) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line == "data: [DONE]":
                return "".join(pieces)
            if line.startswith("data: "):
                event = json.loads(line.removeprefix("data: "))
                assert "error" not in event, event
                if event["choices"][0]["delta"].get("content"):
                    pieces.append(event["choices"][0]["delta"]["content"])
    raise AssertionError("the stream ended without [DONE]")


def test_a_worker_killed_holding_chats_streams_and_images_loses_none_and_repeats_no_token(
        spare_workers, tiny_llm_path, tiny_diffusion_path, live_blaze, openai_client, client_for, operator_user):
    Engine.objects.create(name="kill-chat", kind="llm", model=tiny_llm_path, config={"max_new_tokens": 200})
    Engine.objects.create(name="kill-pixels", kind="diffusion", model=tiny_diffusion_path,
                          config={"max_size": 64, "max_steps": 80, "safety_checker": False})
    doomed, _ = spare_workers("doomed"), spare_workers("survivor")
    for engine in ("kill-chat", "kill-pixels"):  # warm on the doomed worker only, so the requests go there
        loaded = client_for(operator_user).post(f"/api/workers/{doomed.hostname}/cache/",
                                                {"action": "load", "engine": engine}, format="json")
        assert loaded.status_code == 200, loaded.content
    key = openai_client.api_key
    # Never the end-of-text token: each answer runs its 200 tokens, long enough to be cut.
    chats = [{"model": "kill-chat", "max_tokens": 200, "seed": 7 + i, "temperature": 0.8, "logit_bias": {"0": -100},
              "messages": [{"role": "user", "content": f"the cat sat on mat {i}"}]} for i in range(STREAMS)]
    pieces = [[] for _ in chats]
    began = time.time()

    with concurrent.futures.ThreadPoolExecutor(N) as pool:
        streams = [pool.submit(stream, live_blaze, key, body, got) for body, got in zip(chats, pieces)]
        twins = [pool.submit(post, live_blaze, key, "chat/completions", body) for body in chats]
        images = [pool.submit(post, live_blaze, key, "images/generations",
                              {"model": "kill-pixels", "prompt": f"a cat {i}", "size": "64x64", "steps": 80,
                               "seed": i}) for i in range(IMAGES)]
        deadline = time.monotonic() + 60
        while not (all(pieces) and worker_info(doomed.hostname)["in_flight"] == N):
            assert not any(f.done() for f in streams + twins + images), "a request ended before the kill"
            assert time.monotonic() < deadline, f"the doomed worker never held all {N}: {worker_info(doomed.hostname)}"
            time.sleep(0.05)
        doomed.kill()
        cut_at = [len(got) for got in pieces]
        texts = [future.result(timeout=120) for future in streams]
        answers = [future.result(timeout=120) for future in twins]
        pictures = [future.result(timeout=120) for future in images]

    # Its last heartbeat, from at most a beat before the kill: it held all N.
    assert worker_info(doomed.hostname)["in_flight"] == N
    # All N answered (0 lost), every one by a live worker (the survivor, or the suite's own): none had
    # been answered by the doomed worker before it died.
    deadline = time.monotonic() + 5
    while len(logged := [entry for entry in request_log.entries(limit=1000)
                         if entry["model"] in ("kill-chat", "kill-pixels") and entry["t"] >= began]) < N:
        assert time.monotonic() < deadline, f"{len(logged)} of {N} requests in the request log"
        time.sleep(0.1)
    assert [entry["status"] for entry in logged] == [200] * N
    assert doomed.hostname not in {entry["worker"] for entry in logged}
    assert all(len(picture["data"]) == 1 and picture["data"][0]["b64_json"] for picture in pictures)
    # Each stream was cut mid-answer and resumed with no token lost or repeated: the uninterrupted text.
    for text, answer, cut, whole in zip(texts, answers, cut_at, pieces):
        assert 0 < cut < len(whole)
        assert text == answer["choices"][0]["message"]["content"]
        assert answer["usage"]["completion_tokens"] == 200
