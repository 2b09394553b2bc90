"""The engine registry over the native API: /api/engines/<name>/."""

import pytest

from engines.models import Engine

SECRET = "sk-upstream-secret-123"


def llm(**overrides):
    return {"name": "tiny", "kind": "llm", "model": "tiny-llm", **overrides}


def remote(**overrides):
    return {"name": "far", "kind": "llm", "backend": "remote", "base_url": "https://llm.example.com/v1",
            "model": "gpt-x", "api_key": SECRET, **overrides}


@pytest.fixture
def operator(operator_user, client_for):
    return client_for(operator_user)


@pytest.fixture
def viewer(viewer_user, client_for):
    return client_for(viewer_user)


def test_create_returns_the_engine(operator):
    response = operator.post("/api/engines/", llm(weight=2, description="small"), format="json")
    assert response.status_code == 201
    body = response.json()
    assert ((body["name"], body["kind"], body["backend"], body["weight"], body["enabled"])
            == ("tiny", "llm", "local", 2, True))
    assert Engine.objects.get(name="tiny").description == "small"


def test_list_and_retrieve_by_name(operator):
    operator.post("/api/engines/", llm(), format="json")
    operator.post("/api/engines/", llm(name="other"), format="json")
    assert [e["name"] for e in operator.get("/api/engines/").json()["results"]] == ["other", "tiny"]
    assert operator.get("/api/engines/tiny/").json()["model"] == "tiny-llm"


def test_unknown_engine_is_a_json_404(operator):
    response = operator.get("/api/engines/nope/")
    assert response.status_code == 404
    assert "error" in response.json()


def test_a_taken_name_is_a_409_naming_name(operator):
    operator.post("/api/engines/", llm(), format="json")
    response = operator.post("/api/engines/", llm(), format="json")
    assert response.status_code == 409
    assert response.json() == {"error": "name: engine with this name already exists.",
                               "fields": {"name": ["engine with this name already exists."]}}


def test_renaming_an_engine_to_a_taken_name_is_a_409(operator):
    operator.post("/api/engines/", llm(), format="json")
    operator.post("/api/engines/", llm(name="other"), format="json")
    response = operator.patch("/api/engines/other/", {"name": "tiny"}, format="json")
    assert response.status_code == 409 and list(response.json()["fields"]) == ["name"]


def test_patch_changes_only_the_given_field(operator):
    operator.post("/api/engines/", llm(description="old"), format="json")
    response = operator.patch("/api/engines/tiny/", {"description": "new"}, format="json")
    assert response.status_code == 200
    engine = Engine.objects.get(name="tiny")
    assert (engine.description, engine.model) == ("new", "tiny-llm")


def test_put_replaces_the_engine(operator):
    operator.post("/api/engines/", llm(), format="json")
    response = operator.put("/api/engines/tiny/", llm(model="other-llm", weight=5), format="json")
    assert response.status_code == 200
    assert Engine.objects.get(name="tiny").weight == 5


def test_delete_removes_the_engine(operator):
    operator.post("/api/engines/", llm(), format="json")
    assert operator.delete("/api/engines/tiny/").status_code == 204
    assert operator.get("/api/engines/tiny/").status_code == 404


def test_disable_then_enable(operator):
    operator.post("/api/engines/", llm(), format="json")
    assert operator.post("/api/engines/tiny/disable/").json()["enabled"] is False
    assert Engine.objects.get(name="tiny").enabled is False
    assert operator.post("/api/engines/tiny/enable/").json()["enabled"] is True
    assert Engine.objects.get(name="tiny").enabled is True


def test_viewer_reads_but_cannot_write(operator, viewer):
    operator.post("/api/engines/", llm(), format="json")
    assert viewer.get("/api/engines/tiny/").status_code == 200
    assert viewer.post("/api/engines/", llm(name="mine"), format="json").status_code == 403
    assert viewer.patch("/api/engines/tiny/", {"weight": 9}, format="json").status_code == 403
    assert viewer.post("/api/engines/tiny/disable/").status_code == 403
    assert viewer.delete("/api/engines/tiny/").status_code == 403
    assert Engine.objects.get(name="tiny").enabled is True


@pytest.mark.parametrize("kind, config", [
    ("llm", {"max_batch_size": 8, "batch_wait_ms": 10, "max_queue": 256, "precision": "fp32", "max_new_tokens": 512,
             "quantization": "none", "scheduler": "continuous", "prefix_cache_mb": 256, "runtime": "transformers"}),
    ("diffusion", {"max_batch_size": 4, "batch_wait_ms": 10, "max_queue": 256, "precision": "fp32", "max_steps": 50,
                   "max_size": 1024, "attention_slicing": False, "vae_slicing": False, "cpu_offload": "none",
                   "safety_checker": True}),
    ("embedding", {"max_batch_size": 32, "batch_wait_ms": 5, "max_queue": 256, "normalize": True,
                   "max_seq_length": 256, "backend": "torch"}),
])
def test_defaults_are_filled_into_config(operator, kind, config):
    response = operator.post("/api/engines/", llm(kind=kind), format="json")
    assert response.json()["config"] == config
    assert Engine.objects.get(name="tiny").config == config


def test_given_config_values_are_kept_beside_defaults(operator):
    response = operator.post("/api/engines/", llm(config={"precision": "bf16", "max_batch_size": 16}), format="json")
    config = response.json()["config"]
    assert (config["precision"], config["max_batch_size"], config["max_new_tokens"]) == ("bf16", 16, 512)


def test_remote_api_key_is_write_only(operator):
    created = operator.post("/api/engines/", remote(), format="json")
    assert created.status_code == 201
    responses = [created, operator.get("/api/engines/far/"), operator.get("/api/engines/"),
                 operator.patch("/api/engines/far/", {"weight": 2}, format="json"),
                 operator.post("/api/engines/far/disable/")]
    for response in responses:
        assert SECRET not in response.content.decode()
        assert "api_key" not in response.content.decode().replace("has_api_key", "")
    assert created.json()["has_api_key"] is True
    assert Engine.objects.get(name="far").api_key == SECRET


def test_local_engine_has_no_api_key(operator):
    assert operator.post("/api/engines/", llm(), format="json").json()["has_api_key"] is False


def test_patch_without_api_key_keeps_it(operator):
    operator.post("/api/engines/", remote(), format="json")
    operator.patch("/api/engines/far/", {"description": "x"}, format="json")
    assert Engine.objects.get(name="far").api_key == SECRET


def test_remote_requires_base_url(operator):
    response = operator.post("/api/engines/", remote(base_url=""), format="json")
    assert response.status_code == 400
    assert "base_url" in response.json()["fields"]


def test_local_refuses_api_key(operator):
    response = operator.post("/api/engines/", llm(api_key=SECRET), format="json")
    assert response.status_code == 400
    assert "api_key" in response.json()["fields"]
    assert not Engine.objects.exists()


def test_kind_cannot_change(operator):
    operator.post("/api/engines/", llm(), format="json")
    response = operator.patch("/api/engines/tiny/", {"kind": "embedding"}, format="json")
    assert response.status_code == 400
    assert "kind" in response.json()["fields"]
    assert Engine.objects.get(name="tiny").kind == "llm"


def diffusion(**config):
    return llm(kind="diffusion", config=config)


def embedding(**config):
    return llm(kind="embedding", config=config)


def llm_config(**config):
    return llm(config=config)


BAD_INPUT = [
    (llm_config(precision="fp64"), "config.precision"),
    (llm_config(max_new_tokens=0), "config.max_new_tokens"),
    (llm_config(max_new_tokens=-5), "config.max_new_tokens"),
    (llm_config(max_new_tokens="many"), "config.max_new_tokens"),
    (llm_config(max_batch_size=0), "config.max_batch_size"),
    (llm_config(batch_wait_ms=5000), "config.batch_wait_ms"),
    (llm_config(quantization="2bit"), "config.quantization"),
    (llm_config(tempurature=0.7), "config.tempurature"),
    (diffusion(max_size=1020), "config.max_size"),
    (diffusion(max_steps=0), "config.max_steps"),
    (diffusion(cpu_offload="gpu"), "config.cpu_offload"),
    (embedding(max_seq_length=0), "config.max_seq_length"),
    (embedding(normalize="maybe"), "config.normalize"),
    (llm(config=[1, 2]), "config"),
    (llm(colour="red"), "colour"),
    (llm(name="Not A Slug!"), "name"),
    (llm(kind="audio"), "kind"),
    (llm(backend="ftp"), "backend"),
    (llm(weight=-1), "weight"),
    ({"name": "tiny", "kind": "llm"}, "model"),
    (remote(base_url="ftp://x"), "base_url"),
    (llm(keep_alive_seconds=0), "keep_alive_seconds"),
    (remote(keep_alive_seconds=60), "keep_alive_seconds"),
]


@pytest.mark.parametrize("payload, field", BAD_INPUT, ids=[field for _, field in BAD_INPUT])
def test_bad_input_is_a_400_naming_the_field(operator, payload, field):
    response = operator.post("/api/engines/", payload, format="json")
    assert response.status_code == 400
    body = response.json()
    assert field in body["fields"]
    assert body["error"].startswith(field)
    assert not Engine.objects.exists()


def test_bad_config_on_update_is_a_400(operator):
    operator.post("/api/engines/", llm(), format="json")
    response = operator.patch("/api/engines/tiny/", {"config": {"precision": "fp64"}}, format="json")
    assert response.status_code == 400
    assert "config.precision" in response.json()["fields"]
    assert Engine.objects.get(name="tiny").config["precision"] == "fp32"


def test_patch_of_one_config_key_keeps_the_others(client_for, operator_user):
    api = client_for(operator_user)
    api.post("/api/engines/", {"name": "keep", "kind": "llm", "model": "org/m", "config": {"max_batch_size": 16}},
             format="json")
    response = api.patch("/api/engines/keep/", {"config": {"precision": "bf16"}}, format="json")
    assert response.status_code == 200
    assert response.json()["config"]["max_batch_size"] == 16
    assert response.json()["config"]["precision"] == "bf16"


def test_patch_of_enabled_is_refused_with_where_to_do_it(client_for, operator_user):
    api = client_for(operator_user)
    api.post("/api/engines/", {"name": "en", "kind": "llm", "model": "org/m"}, format="json")
    response = api.patch("/api/engines/en/", {"enabled": False}, format="json")
    assert response.status_code == 400
    assert "disable" in response.json()["fields"]["enabled"][0]
    assert api.get("/api/engines/en/").json()["enabled"] is True
