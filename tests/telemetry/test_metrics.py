"""/metrics/prometheus and /metrics: every process counted, protected by token or address."""

import socket
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from engines.models import Engine
from tests.servers import metrics_published

TOKEN = "scrape-me"


def samples(text):
    """{(name, frozenset(labels)): value} from a Prometheus exposition."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text) for sample in family.samples
    }


def value(parsed, name, **labels):
    return sum(v for (n, ls), v in parsed.items() if n == name and set(labels.items()) <= ls)


@pytest.fixture
def closed_to_strangers(settings, db):  # db: the block list is read from the database when Redis lacks it
    settings.BLAZE_METRICS_ALLOW_IPS = []
    settings.BLAZE_METRICS_TOKEN = TOKEN


def test_prometheus_needs_the_token_or_an_allowed_address(api, closed_to_strangers, settings):
    assert api.get("/metrics/prometheus").status_code in (401, 403)
    assert api.get("/metrics/prometheus", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200
    assert api.get("/metrics/prometheus", HTTP_AUTHORIZATION="Bearer wrong").status_code in (401, 403)
    settings.BLAZE_METRICS_ALLOW_IPS = ["127.0.0.0/8"]
    assert api.get("/metrics/prometheus").status_code == 200


def test_metrics_json_is_open_to_signed_in_users_only(api, client_for, viewer_user, closed_to_strangers):
    assert api.get("/metrics").status_code in (401, 403)
    response = client_for(viewer_user).get("/metrics")
    assert response.status_code == 200 and {"http", "engines", "workers", "counters"} <= set(response.json())


def test_request_counts_and_latency_move_with_traffic(api, admin_user, client_for, closed_to_strangers):
    auth = {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}
    before = samples(api.get("/metrics/prometheus", **auth).content.decode())
    client = client_for(admin_user)
    for _ in range(3):
        client.get("/api/engines/")
    client.get("/api/engines/424242/")
    after = samples(api.get("/metrics/prometheus", **auth).content.decode())
    route = {"endpoint": "/api/engines/"}
    delta = lambda name, **labels: value(after, name, **labels) - value(before, name, **labels)  # noqa: E731
    assert delta("blaze_http_requests_total", status="200", method="GET", **route) == 3
    assert delta("blaze_http_request_duration_seconds_count", method="GET", **route) == 3
    assert delta("blaze_http_requests_total", status="404", method="GET") == 1


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_worker_metrics_reach_the_web_process(engine_worker, live_blaze, tiny_llm_path, openai_client):
    Engine.objects.create(name="counted", kind="llm", model=tiny_llm_path,
                          config={"max_new_tokens": 16, "max_batch_size": 8, "batch_wait_ms": 5})
    scrape = lambda: samples(httpx.get(f"{live_blaze}/metrics/prometheus", timeout=30).text)  # noqa: E731
    metrics_published()  # every count of earlier tests is in `before`
    before = scrape()
    stream = openai_client.chat.completions.create(
        model="counted", messages=[{"role": "user", "content": "hi"}], max_tokens=4, temperature=0, stream=True)
    assert list(stream)
    # The worker publishes its samples every BLAZE_METRICS_PUSH_SECONDS (telemetry/cluster.py).
    deadline = time.monotonic() + 10
    while True:
        after = scrape()
        done = value(after, "blaze_inference_duration_seconds_count", engine="counted") > value(
            before, "blaze_inference_duration_seconds_count", engine="counted")
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    delta = lambda name, **labels: value(after, name, **labels) - value(before, name, **labels)  # noqa: E731
    assert delta("blaze_http_requests_total", endpoint="/v1/chat/completions", status="200") == 1
    # Observed in the worker process: a continuous scheduler's rows per decode step (the first token
    # comes from the prefill, so up to 3 steps for 4 tokens), and the wait for a slot by priority.
    assert 1 <= delta("blaze_batch_size_count", engine="counted") <= 3
    assert delta("blaze_queue_wait_seconds_count", engine="counted", priority="4") == 1
    assert delta("blaze_inference_duration_seconds_count", engine="counted", kind="llm") == 1
    assert delta("blaze_tokens_generated_total", engine="counted") >= 1
    assert delta("blaze_time_to_first_token_seconds_count", engine="counted") == 1
    assert delta("blaze_model_cache_events_total", event="miss") == 1
    # Each series says which process of which host it came from.
    [(host, process)] = {(dict(ls)["host"], dict(ls)["process"]) for (n, ls), v in after.items()
                         if n == "blaze_batch_size_count" and ("engine", "counted") in ls}
    assert host == socket.gethostname() and process.startswith("worker:")
    snapshot = httpx.get(f"{live_blaze}/metrics", timeout=30).json()
    assert snapshot["engines"]["counted"]["batch_size"]["count"] >= 1
