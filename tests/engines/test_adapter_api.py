"""An engine's LoRA adapters over the native API (/api/engines/<name>/adapters/) and on the engine's
page: viewers read, operators add, change and remove, each change audited on the engine; a path is
checked on the live workers (a PEFT adapter that fits the engine's model) before it is saved."""

import pytest

from accounts.models import AuditEvent
from engines.models import Adapter, Engine

pytestmark = pytest.mark.slow  # the adapters are trained, and the live worker checks each path

URL = "/api/engines/lorabase/adapters/"


@pytest.fixture
def base(db, tiny_llm_path):
    return Engine.objects.create(name="lorabase", kind="llm", model=tiny_llm_path, config={"max_new_tokens": 64})


@pytest.fixture
def operator_api(operator_user, client_for):
    return client_for(operator_user)


def test_an_operator_adds_an_adapter_the_worker_checked(engine_worker, base, tiny_loras, operator_api):
    response = operator_api.post(URL, {"name": "red", "path": tiny_loras["red"]}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["engine"], body["model"], body["enabled"]) == ("lorabase", "lorabase:red", True)
    assert (body["check"]["runtime"], body["check"]["rank"], body["check"]["workers"]) == (
        "transformers", 8, [{"id": engine_worker.hostname}])
    assert [adapter["name"] for adapter in operator_api.get(URL).json()] == ["red"]
    [event] = AuditEvent.objects.filter(action="engine.adapter_add")
    assert (event.target, event.data, event.changes["path"]) == ("lorabase", {"adapter": "red"},
                                                                 [None, tiny_loras["red"]])


def test_a_path_that_is_not_an_adapter_for_this_model_is_a_400_naming_path(engine_worker, base, tiny_llm_path,
                                                                            operator_api):
    response = operator_api.post(URL, {"name": "red", "path": tiny_llm_path}, format="json")
    assert response.status_code == 400
    assert "no adapter_config.json" in response.json()["fields"]["path"][0]
    assert not Adapter.objects.exists()


def test_an_adapter_name_is_a_model_name_no_engine_may_share(engine_worker, base, tiny_loras, operator_api):
    response = operator_api.post(URL, {"name": "lorabase", "path": tiny_loras["red"]}, format="json")
    assert response.status_code == 409 and "name" in response.json()["fields"]
    operator_api.post(URL, {"name": "red", "path": tiny_loras["red"]}, format="json")
    response = operator_api.post("/api/engines/", {"name": "red", "kind": "llm", "model": "x"}, format="json")
    assert response.status_code == 400 and "An adapter is named red" in response.json()["fields"]["name"][0]


def test_a_remote_engine_takes_no_adapter(engine_worker, tiny_loras, operator_api, db):
    Engine.objects.create(name="far", kind="llm", backend="remote", base_url="https://llm.example.com/v1")
    response = operator_api.post("/api/engines/far/adapters/", {"name": "red", "path": tiny_loras["red"]},
                                 format="json")
    assert response.status_code == 400 and "not a local LLM engine" in response.json()["fields"]["engine"][0]


def test_an_operator_disables_then_removes_an_adapter_and_its_name_stays_fixed(engine_worker, base, tiny_loras,
                                                                                operator_api):
    operator_api.post(URL, {"name": "red", "path": tiny_loras["red"]}, format="json")
    assert operator_api.patch(f"{URL}red/", {"enabled": False}, format="json").json()["enabled"] is False
    assert operator_api.patch(f"{URL}red/", {"name": "green"}, format="json").status_code == 400
    assert operator_api.delete(f"{URL}red/").status_code == 204
    assert not Adapter.objects.exists()
    assert list(AuditEvent.objects.filter(action__startswith="engine.adapter").values_list("action", flat=True)
                .order_by("id")) == ["engine.adapter_add", "engine.adapter_update", "engine.adapter_remove"]


def test_a_viewer_reads_adapters_but_cannot_change_them(base, tiny_loras, viewer_user, client_for):
    Adapter.objects.create(engine=base, name="red", path=tiny_loras["red"])
    viewer = client_for(viewer_user)
    assert [adapter["model"] for adapter in viewer.get(URL).json()] == ["lorabase:red"]
    assert viewer.post(URL, {"name": "blue", "path": tiny_loras["blue"]}, format="json").status_code == 403
    assert viewer.delete(f"{URL}red/").status_code == 403
    assert viewer.get("/api/engines/nope/adapters/").status_code == 404


def test_the_engine_page_lists_adds_and_removes_adapters(engine_worker, base, tiny_loras, tiny_llm_path, operator):
    added = operator.post("/engines/lorabase/adapters/", {"name": "red", "path": tiny_loras["red"]})
    assert added.status_code == 302
    page = operator.get("/engines/lorabase/").content.decode()
    assert "lorabase:red" in page and 'id="adapter-form"' in page
    refused = operator.post("/engines/lorabase/adapters/", {"name": "blue", "path": tiny_llm_path})
    assert refused.status_code == 400 and "no adapter_config.json" in refused.content.decode()
    assert operator.post("/engines/lorabase/adapters/red/remove/").status_code == 302
    assert not Adapter.objects.exists()


def test_a_viewer_sees_the_adapters_without_the_form(base, tiny_loras, viewer):
    Adapter.objects.create(engine=base, name="red", path=tiny_loras["red"])
    page = viewer.get("/engines/lorabase/").content.decode()
    assert "lorabase:red" in page and 'id="adapter-form"' not in page
    assert viewer.post("/engines/lorabase/adapters/red/remove/").status_code == 403
