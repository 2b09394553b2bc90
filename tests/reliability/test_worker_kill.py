"""A worker SIGKILLed while it holds requests: another live worker answers them, a stream resuming
where it stopped (same seed: no token repeated); with no other worker, a stream ends with an explicit
error event within seconds rather than hanging."""

import concurrent.futures
import json
import time

import httpx
import pytest

from engines.heartbeats import live_workers, worker_info
from engines.models import Engine

pytestmark = [pytest.mark.reliability, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_a_worker_killed_mid_request_is_replaced_by_another(spare_workers, tiny_diffusion_path, openai_client,
                                                            client_for, operator_user):
    Engine.objects.create(name="slow-pixels", kind="diffusion", model=tiny_diffusion_path,
                          config={"max_size": 128, "max_steps": 200})
    doomed, _ = spare_workers("doomed"), spare_workers("survivor")
    # Warm the model on the doomed worker only, so the request goes there.
    loaded = client_for(operator_user).post(f"/api/workers/{doomed.hostname}/cache/",
                                            {"action": "load", "engine": "slow-pixels"}, format="json")
    assert loaded.status_code == 200, loaded.content

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(openai_client.images.generate, model="slow-pixels", prompt="x", size="64x64",
                             extra_body={"steps": 200, "seed": 3})
        deadline = time.monotonic() + 30
        while worker_info(doomed.hostname)["in_flight"] == 0:
            assert time.monotonic() < deadline, "the request never reached the warm worker"
            time.sleep(0.1)
        doomed.kill()
        response = future.result(timeout=120)

    assert len(response.data) == 1 and response.data[0].b64_json
    answered_by = [w["id"] for w in live_workers()
                   if not w["lost"] and any(e["engine"] == "slow-pixels" for e in w["cache"])]
    assert answered_by and doomed.hostname not in answered_by


def test_a_stream_whose_worker_is_killed_ends_with_an_error_event(spare_workers, smollm2_path, live_blaze,
                                                                   openai_client, client_for, operator_user):
    Engine.objects.create(name="smol-doomed", kind="llm", model=smollm2_path, config={"max_new_tokens": 512})
    doomed = spare_workers("doomed-stream")
    loaded = client_for(operator_user).post(f"/api/workers/{doomed.hostname}/cache/",
                                            {"action": "load", "engine": "smol-doomed"}, format="json")
    assert loaded.status_code == 200, loaded.content
    body = {"model": "smol-doomed", "stream": True, "max_tokens": 400,
            "messages": [{"role": "user", "content": "Tell a long story about a lighthouse."}]}
    events = []
    with httpx.stream("POST", f"{live_blaze}/v1/chat/completions", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {openai_client.api_key}"}) as response:
        lines = response.iter_lines()
        for line in lines:
            if line.startswith("data: ") and '"content"' in line:
                break  # the first token: the worker holds the stream now
        doomed.kill()
        killed = time.monotonic()
        events = [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]
    ended_after = time.monotonic() - killed
    assert ended_after < 15  # the worker's loss is noticed (heartbeats stop: 3 s here) and the stream ends
    last = json.loads(events[-2] if events[-1] == "[DONE]" else events[-1])
    assert last["error"]["type"] == "server_error" and "worker" in last["error"]["message"].lower(), last


def stream_text(base, key, body, kill=None):
    """The streamed answer's text; `kill` (a worker) is SIGKILLed once the first tokens arrived."""
    pieces = []
    with httpx.stream("POST", f"{base}/v1/chat/completions", json={**body, "stream": True}, timeout=120,
                      headers={"Authorization": f"Bearer {key}"}) as response:
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line.removeprefix("data: "))
            assert "error" not in event, event
            pieces.append(event["choices"][0]["delta"].get("content") or "")
            if kill is not None and len(pieces) == 5:
                kill.kill()
    return "".join(pieces)


def test_a_stream_whose_worker_is_killed_resumes_on_another_without_repeating(
        spare_workers, smollm2_path, live_blaze, openai_client, client_for, operator_user):
    Engine.objects.create(name="smol-resume", kind="llm", model=smollm2_path, config={"max_new_tokens": 512})
    doomed, _ = spare_workers("doomed-resume"), spare_workers("survivor-resume")
    loaded = client_for(operator_user).post(f"/api/workers/{doomed.hostname}/cache/",
                                            {"action": "load", "engine": "smol-resume"}, format="json")
    assert loaded.status_code == 200, loaded.content
    body = {"model": "smol-resume", "max_tokens": 60, "seed": 7, "temperature": 0.8,
            "messages": [{"role": "user", "content": "Describe a lighthouse at night."}]}
    whole = stream_text(live_blaze, openai_client.api_key, body)  # the doomed worker, warm, answers it
    resumed = stream_text(live_blaze, openai_client.api_key, body, kill=doomed)
    assert resumed == whole and len(whole) > 40
