"""A worker SIGKILLed while it holds requests: another live worker answers them, a stream resuming
where it stopped (same seed: no token repeated)."""

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
