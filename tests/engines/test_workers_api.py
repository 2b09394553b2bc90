"""Operators load, unload and evict models on a real worker over the API; each act is audited."""

import httpx
import pytest

from accounts.models import AuditEvent
from engines.demo import minilm_path
from engines.heartbeats import worker_info
from engines.models import Engine
from telemetry import request_log
from tests.servers import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def engines(db, tiny_diffusion_path):
    Engine.objects.create(name="minilm", kind="embedding", model=str(minilm_path()), config={"max_seq_length": 128})
    Engine.objects.create(name="pixels", kind="diffusion", model=tiny_diffusion_path, config={"max_size": 128})


def cached(worker):
    return [entry["engine"] for entry in worker_info(worker.hostname)["cache"]]


def cache_url(worker):
    return f"/api/workers/{worker.hostname}/cache/"


def test_workers_are_listed_with_device_and_memory(engine_worker, client_for, viewer_user):
    workers = client_for(viewer_user).get("/api/workers/").json()
    [me] = [w for w in workers if w["id"] == engine_worker.hostname]
    assert me["device"] == "cpu" and me["total_bytes"] > 0 and me["lost"] is False and me["pid"] > 0


def test_load_unload_and_evict_are_visible_and_audited(engine_worker, engines, client_for, operator_user):
    api = client_for(operator_user)
    while api.post(cache_url(engine_worker), {"action": "evict"}, format="json").json()["evicted"]:
        pass  # start from an empty cache: earlier tests share this worker
    first_event = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
    loaded = api.post(cache_url(engine_worker), {"action": "load", "engine": "pixels"}, format="json")
    assert loaded.status_code == 200, loaded.json()
    assert loaded.json()["bytes"] > 0
    assert api.post(cache_url(engine_worker), {"action": "load", "engine": "minilm"}, format="json").status_code == 200
    assert cached(engine_worker) == ["minilm", "pixels"]  # most recently used first
    assert Engine.objects.get(name="pixels").status == Engine.Status.READY

    evicted = api.post(cache_url(engine_worker), {"action": "evict"}, format="json").json()
    assert evicted == {"evicted": "pixels"}
    assert api.post(cache_url(engine_worker), {"action": "unload", "engine": "minilm"},
                    format="json").json() == {"unloaded": True}
    assert cached(engine_worker) == []
    assert Engine.objects.get(name="minilm").status == Engine.Status.OFFLINE

    actions = list(AuditEvent.objects.filter(action__startswith="cache.", id__gt=first_event)
                   .order_by("id").values_list("action", "target"))
    assert actions == [("cache.load", "pixels"), ("cache.load", "minilm"),
                       ("cache.evict", "pixels"), ("cache.unload", "minilm")]
    assert AuditEvent.objects.filter(action="cache.load").first().data["worker"] == engine_worker.hostname


def test_a_model_that_can_never_fit_is_refused_with_a_clear_error(engine_worker, engines, client_for, operator_user,
                                                                  tmp_path):
    huge = tmp_path / "huge"
    huge.mkdir()
    (huge / "config.json").write_text(
        '{"model_type": "gpt2", "n_layer": 48, "n_embd": 8192, "n_head": 64, "vocab_size": 50000, "n_positions": 1024}'
    )
    Engine.objects.create(name="huge", kind="llm", model=str(huge))
    response = client_for(operator_user).post(cache_url(engine_worker), {"action": "load", "engine": "huge"},
                                              format="json")
    assert response.status_code == 400
    assert "can never be loaded" in response.json()["fields"]["engine"][0]


def test_viewers_cannot_change_a_cache(engine_worker, engines, client_for, viewer_user):
    response = client_for(viewer_user).post(cache_url(engine_worker), {"action": "evict"}, format="json")
    assert response.status_code == 403


def test_bad_actions_name_the_field(engine_worker, client_for, operator_user):
    api = client_for(operator_user)
    assert "action" in api.post(cache_url(engine_worker), {"action": "explode"}, format="json").json()["fields"]
    assert "engine" in api.post(cache_url(engine_worker), {"action": "load"}, format="json").json()["fields"]
    assert "engine" in api.post(cache_url(engine_worker), {"action": "load", "engine": "nope"},
                                format="json").json()["fields"]
    assert api.get("/api/workers/nobody@nowhere/cache/").status_code == 404


def test_disabling_an_engine_unloads_it_from_every_worker(engine_worker, engines, client_for, operator_user):
    import time

    api = client_for(operator_user)
    assert api.post(cache_url(engine_worker), {"action": "load", "engine": "pixels"}, format="json").status_code == 200
    assert api.post("/api/engines/pixels/disable/").status_code == 200
    deadline = time.monotonic() + 10
    while "pixels" in cached(engine_worker):
        assert time.monotonic() < deadline, "the worker kept the disabled engine loaded"
        time.sleep(0.2)


def test_an_idle_model_is_unloaded_after_its_keep_alive_and_the_next_request_loads_it(engine_worker, tiny_llm_path,
                                                                                      openai_client):
    Engine.objects.create(name="napper", kind="llm", model=tiny_llm_path, keep_alive_seconds=2,
                          config={"max_new_tokens": 8})
    ask = {"model": "napper", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    assert openai_client.chat.completions.create(**ask).choices[0].message.content is not None
    assert "napper" in cached(engine_worker)
    wait_for(lambda: "napper" not in cached(engine_worker), 15, "the idle unload")
    # The status is written once the model is freed, a moment after the cache let it go.
    idle = (Engine.Status.OFFLINE, f"idle, unloaded on {engine_worker.hostname}")
    wait_for(lambda: tuple(Engine.objects.values_list("status", "status_detail").get(name="napper")) == idle, 15,
             "the engine's status")
    # Loaded again to answer it; the client is told why it waits (an SSE comment), and so is the request log.
    with httpx.stream("POST", f"{openai_client.base_url}chat/completions", json={**ask, "stream": True},
                      headers={"Authorization": f"Bearer {openai_client.api_key}"}, timeout=60) as response:
        lines = [line for line in response.iter_lines() if line]
    [at] = [index for index, line in enumerate(lines) if line.startswith(":")]
    assert lines[at].startswith(f": loading napper on {engine_worker.hostname}, about ") and lines[-1] == "data: [DONE]"
    assert any('"content": "' in line and '"content": ""' not in line for line in lines[at + 1:-1])  # then the answer
    assert "napper" in cached(engine_worker)
    wait_for(lambda: request_log.entries(route="napper", limit=1)[0].get("streamed"), 5, "the request log entry")
    [entry] = request_log.entries(route="napper", limit=1)
    assert entry["cold_start"] == lines[at][2:] and entry["cold_start_seconds"] > 0


def test_unload_everywhere_drops_the_model_from_every_worker_and_is_audited(engine_worker, tiny_llm_path, client,
                                                                          operator_user, client_for):
    engine = Engine.objects.create(name="ejected", kind="llm", model=tiny_llm_path)
    api = client_for(operator_user)
    assert api.post(cache_url(engine_worker), {"action": "load", "engine": "ejected"}, format="json").status_code == 200
    client.force_login(operator_user)
    page = client.get(f"/engines/{engine.name}/").content.decode()
    assert f"{engine_worker.hostname}: " in page and 'id="unload-everywhere"' in page
    client.post(f"/engines/{engine.name}/unload/")
    wait_for(lambda: "ejected" not in cached(engine_worker), 15, "the unload")
    event = AuditEvent.objects.get(action="cache.unload_everywhere")
    assert (event.target, event.data["workers"]) == ("ejected", [engine_worker.hostname])
    assert api.post("/api/engines/ejected/unload/").json() == {"workers": []}  # nothing left to unload
