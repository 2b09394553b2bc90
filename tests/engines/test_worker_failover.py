"""A request accepted is answered: a worker killed mid-request does not lose it."""

import concurrent.futures
import time

import pytest

from engines.heartbeats import live_workers, worker_info
from engines.models import Engine

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


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
