"""What the workers can serve, as the web side sees it: each worker publishes the models under its
models directory and in its Hugging Face cache (the Models page and /api/models/ list them, Register
prefills the engine form), and saving a local engine asks the live workers what is at its model rather
than looking at the web server's disk: a path no worker has, another kind of model, or one no worker's
cache can hold is refused naming the field; with no worker running the save goes through, warned."""

import json
import shutil
import struct
from pathlib import Path

import pytest
from django.urls import reverse

from engines import catalog
from engines.models import Engine
from tests.servers import start_worker, wait_for

pytestmark = pytest.mark.slow


def hf_layout(root, repo, source):
    """`source`'s files in a Hugging Face hub cache under `root` (blobs, a snapshot of links, refs/main)."""
    org, name = repo.split("/")
    base = root / f"models--{org}--{name}"
    (base / "blobs").mkdir(parents=True)
    snapshot = base / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    for path in Path(source).iterdir():
        if path.is_file():
            blob = base / "blobs" / f"blob-{path.name}"
            shutil.copy(path, blob)
            (snapshot / path.name).symlink_to(blob)
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text("0123abcd")


@pytest.fixture(scope="module")
def workers_with_models(django_db_setup, django_db_blocker, tmp_path_factory, tiny_llm_path):
    """A worker with the tiny LLM in its models directory and as acme/tiny-chat in its Hugging Face
    cache (other tests' workers may be live too: they scan other directories)."""
    root = tmp_path_factory.mktemp("catalog")
    (root / "models").mkdir()
    (root / "models" / "tiny-chat").symlink_to(tiny_llm_path)
    (root / "models" / "notes").mkdir()  # not a model: left out
    hf_layout(root / "hub", "acme/tiny-chat", tiny_llm_path)
    with django_db_blocker.unblock():
        worker = start_worker(root, "catalog", threads=2, BLAZE_MODELS_DIR=str(root / "models"),
                              HF_HUB_CACHE=str(root / "hub"), BLAZE_CATALOG_SECONDS="1")
    try:
        wait_for(lambda: len(mine(root)) == 2, 30, "the worker's catalog", worker)
        yield {"worker": worker, "root": root, "models": root / "models"}
    finally:
        worker.stop()


def mine(root):
    return {row["name"]: row for row in catalog.models() if row["path"].startswith(str(root))}


def huge_model(folder):
    """A GPT-2 whose weights header declares 100 billion parameters, in a sparse file (no disk used)."""
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}))
    rows, columns = 100_000, 1_000_000
    header = json.dumps({"w": {"dtype": "F32", "shape": [rows, columns], "data_offsets": [0, rows * columns * 4]}})
    with open(folder / "model.safetensors", "wb") as weights:
        weights.write(struct.pack("<Q", len(header)) + header.encode())
        weights.truncate(8 + len(header) + rows * columns * 4)
    return str(folder)


def test_the_catalog_lists_the_models_directory_and_the_hub_cache(workers_with_models):
    rows = mine(workers_with_models["root"])
    assert set(rows) == {"acme/tiny-chat", "tiny-chat"}
    local, hub = rows["tiny-chat"], rows["acme/tiny-chat"]
    assert (local["source"], local["kind"], local["architecture"], local["chat_template"]) == (
        "models_dir", "llm", "GPT2LMHeadModel", True)
    assert local["parameters"] > 0 and local["memory_bytes"] == local["parameters"] * 4
    assert local["workers"] == [{"id": "catalog@test", "fits": True}]
    assert hub["source"] == "hf_cache" and hub["size_bytes"] == local["size_bytes"]  # counted through the links


def test_the_models_page_lists_them_and_register_prefills_the_engine_form(workers_with_models, client,
                                                                          operator_user):
    client.force_login(operator_user)
    page = client.get(reverse("engines:models")).content.decode()
    assert "GPT2LMHeadModel" in page and "catalog@test" in page and "acme/tiny-chat" in page
    tiny = workers_with_models["models"] / "tiny-chat"
    link = f"/engines/new/?model={tiny}&amp;kind=llm&amp;name=tiny-chat"
    assert link in page
    form = client.get(link.replace("&amp;", "&")).content.decode()
    assert f'value="{tiny}"' in form and 'value="tiny-chat"' in form


def test_saving_asks_the_workers_and_refuses_naming_the_field(workers_with_models, client_for, operator_user):
    api = client_for(operator_user)
    tiny = str(workers_with_models["models"] / "tiny-chat")
    missing = api.post("/api/engines/", {"name": "nowhere", "kind": "llm", "model": "/srv/models/nowhere"},
                       format="json")
    assert missing.status_code == 400
    assert missing.json()["fields"]["model"][0].startswith("No live worker has this model (")
    assert "catalog@test" in missing.json()["fields"]["model"][0]
    wrong_kind = api.post("/api/engines/", {"name": "wrong", "kind": "embedding", "model": tiny}, format="json")
    assert wrong_kind.status_code == 400
    assert wrong_kind.json()["fields"]["kind"] == [f"{tiny} is an LLM model (GPT2LMHeadModel), not an embedding one."]
    assert not Engine.objects.filter(name__in=["nowhere", "wrong"]).exists()

    saved = api.post("/api/engines/", {"name": "tiny-chat", "kind": "llm", "model": tiny}, format="json")
    assert saved.status_code == 201, saved.json()
    check = saved.json()["model_check"]
    assert check["architecture"] == "GPT2LMHeadModel" and {"id": "catalog@test", "fits": True} in check["workers"]
    assert check["warning"] is None
    # A hub id the workers have cached is checked as well.
    hub = api.post("/api/models/inspect/", {"model": "acme/tiny-chat", "kind": "llm"}, format="json")
    assert hub.status_code == 200 and hub.json()["parameters"] == check["parameters"]


def test_a_model_no_worker_can_hold_is_refused(workers_with_models, client_for, operator_user):
    huge = huge_model(workers_with_models["root"] / "huge")
    refused = client_for(operator_user).post("/api/engines/", {"name": "huge", "kind": "llm", "model": huge},
                                             format="json")
    assert refused.status_code == 400
    message = refused.json()["fields"]["model"][0].replace("\xa0", " ")
    assert message.startswith(f"{huge} needs about 372.5 GB and the largest model cache of the workers that have it")
    assert message.endswith("it can never be loaded.")


def test_with_no_worker_running_the_engine_is_saved_with_a_warning(db, client_for, operator_user,
                                                                   own_redis_prefix):
    saved = client_for(operator_user).post("/api/engines/", {"name": "unchecked", "kind": "llm",
                                                             "model": "/srv/models/later"}, format="json")
    assert saved.status_code == 201
    assert saved.json()["model_check"]["warning"].startswith("No worker is running, so the model could not be checked")
