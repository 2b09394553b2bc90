"""The engine pages: list, detail, the register/edit form, toggle and delete."""

import pytest

from accounts.models import AuditEvent
from engines.models import Engine


@pytest.fixture
def engine(db):
    return Engine.objects.create(name="tiny", kind="llm", model="tiny-llm", config={"max_batch_size": 8})


def form(**fields):
    return {"name": "paint", "kind": "diffusion", "backend": "local", "model": "tiny-sd", "weight": "2",
            "description": "small painter", "config.max_batch_size": "2", "config.max_steps": "30", **fields}


def test_viewer_sees_list_and_detail(viewer, engine):
    assert "tiny" in viewer.get("/engines/").content.decode()
    detail = viewer.get("/engines/tiny/")
    assert detail.status_code == 200
    assert "tiny-llm" in detail.content.decode()


def test_viewer_cannot_open_the_form(viewer, engine):
    assert viewer.get("/engines/new/").status_code == 403
    assert viewer.get("/engines/tiny/edit/").status_code == 403


def test_viewer_cannot_toggle_or_delete(viewer, engine):
    assert viewer.post("/engines/tiny/toggle/").status_code == 403
    assert viewer.post("/engines/tiny/delete/").status_code == 403
    assert Engine.objects.get(name="tiny").enabled is True


def test_unknown_engine_page_is_404(viewer):
    assert viewer.get("/engines/nope/").status_code == 404


@pytest.mark.parametrize("path", ["/engines/", "/engines/tiny/", "/engines/new/"])
def test_anonymous_is_sent_to_login(client, engine, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"] == f"/login/?next={path}"


def test_operator_registers_an_engine(operator):
    response = operator.post("/engines/new/", form(**{"config.attention_slicing": "on"}))
    assert response.status_code == 302
    assert response["Location"] == "/engines/paint/"
    engine = Engine.objects.get(name="paint")
    assert ((engine.kind, engine.model, engine.weight, engine.description)
            == ("diffusion", "tiny-sd", 2, "small painter"))
    assert (engine.config["max_batch_size"], engine.config["max_steps"]) == (2, 30)


def test_unchecked_checkbox_means_false(operator):
    operator.post("/engines/new/", form(**{"config.attention_slicing": "on"}))
    config = Engine.objects.get(name="paint").config
    assert config["attention_slicing"] is True
    assert config["safety_checker"] is False


def test_bad_config_value_re_renders_the_form_with_the_error(operator):
    response = operator.post("/engines/new/", form(**{"config.max_batch_size": "0"}))
    assert response.status_code == 400
    assert "Ensure this value is greater than or equal to 1." in response.content.decode()
    assert 'value="small painter"' in response.content.decode()
    assert not Engine.objects.exists()


def test_edit_form_shows_and_saves(operator, engine):
    assert 'value="tiny-llm"' in operator.get("/engines/tiny/edit/").content.decode()
    response = operator.post("/engines/tiny/edit/", {"name": "tiny", "backend": "local", "model": "tiny-llm",
                                                     "weight": "4", "description": "", "config.max_batch_size": "16"})
    assert response["Location"] == "/engines/tiny/"
    engine = Engine.objects.get(name="tiny")
    assert (engine.weight, engine.config["max_batch_size"]) == (4, 16)
    assert AuditEvent.objects.get(action="engine.update").changes["weight"] == [1, 4]


def test_toggle_disables_and_is_audited(operator, engine):
    response = operator.post("/engines/tiny/toggle/")
    assert response["Location"] == "/engines/tiny/"
    assert Engine.objects.get(name="tiny").enabled is False
    assert AuditEvent.objects.get(action="engine.disable").actor == "otto"


def test_delete_removes_and_is_audited(operator, engine):
    response = operator.post("/engines/tiny/delete/")
    assert response["Location"] == "/engines/"
    assert not Engine.objects.filter(name="tiny").exists()
    assert AuditEvent.objects.get(action="engine.delete").target == "tiny"


def test_toggle_and_delete_refuse_get(operator, engine):
    assert operator.get("/engines/tiny/toggle/").status_code == 405
    assert operator.get("/engines/tiny/delete/").status_code == 405
    assert Engine.objects.get(name="tiny").enabled is True
