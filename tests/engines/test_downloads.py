"""Downloads of models from a Hugging Face hub onto a worker, against a loopback hub (tests/hub.py) serving
a tiny model made in the test: the model lands whole in the worker's models directory with its progress
(bytes, rate, ETA) in Redis; bytes already on disk are not fetched again (HTTP Range), also after the
real worker process is killed mid-download and started again; a missing repository, a gated one
without its token, and a full disk each fail with a message saying what to do; cancel stops it and
deletes what it fetched. The API refuses bad input naming the field, and viewers may only look."""

import shutil
import threading
import time

import pytest

from accounts.models import AuditEvent
from engines import catalog, downloads
from engines.worker import download
from engines.worker.catalog import scan
from tests.hub import LoopbackHub
from tests.servers import start_worker, wait_for

WORKER = "w-test@here"


@pytest.fixture
def hub(tiny_llm_path):
    """The loopback hub with acme/tiny-chat (the tiny LLM) and acme/locked (the same, gated)."""
    server = LoopbackHub(token="hf_right")
    server.add("acme/tiny-chat", tiny_llm_path)
    server.add("acme/locked", tiny_llm_path, gated=True)
    yield server
    server.stop()


@pytest.fixture
def on_hub(hub, own_redis_prefix, tmp_path):
    """This process downloads from `hub` (no token) into tmp_path/models, with a Redis prefix of its own."""
    own_redis_prefix.HF_ENDPOINT, own_redis_prefix.HF_TOKEN = hub.endpoint, ""
    own_redis_prefix.BLAZE_MODELS_DIR = tmp_path / "models"
    (tmp_path / "models").mkdir()
    return own_redis_prefix


def asked(repo, revision="main", worker=WORKER):
    record = downloads.new(repo=repo, revision=revision, worker=worker, requested_by="test")
    downloads.create(record)
    return record["id"]


def staging(settings, repo):
    return settings.BLAZE_MODELS_DIR / download.STAGING / f"{repo.replace('/', '--')}@main"


def test_a_download_lands_the_model_whole_with_its_progress(on_hub, hub):
    hub.pace = 400_000  # bytes a second: the tiny model takes about two seconds
    download_id = asked("acme/tiny-chat")
    running = threading.Thread(target=download.run, args=(download_id, WORKER))
    running.start()
    seen = []
    while running.is_alive():
        seen.append(downloads.get(download_id))
        time.sleep(0.1)
    done = downloads.get(download_id)

    files = hub.repos["acme/tiny-chat"]["files"]
    total = sum(len(data) for data in files.values())
    assert (done["state"], done["error"], done["bytes_done"], done["bytes_total"]) == ("done", "", total, total)
    assert (done["files_done"], done["files_total"]) == (len(files), len(files))
    target = on_hub.BLAZE_MODELS_DIR / "tiny-chat"
    assert done["target"] == str(target) and done["endpoint"] == hub.endpoint
    assert {path: (target / path).read_bytes() for path in files} == files
    assert not staging(on_hub, "acme/tiny-chat").exists()
    midway = [record for record in seen if record["state"] == "running" and 0 < record["bytes_done"] < total]
    assert midway and any(0 < record["rate"] < 4_000_000 and record["eta"] > 0 for record in midway)
    # The worker's catalog lists it as a model it can serve.
    [facts] = scan(on_hub.BLAZE_MODELS_DIR, None)
    assert (facts["name"], facts["architecture"]) == ("tiny-chat", "GPT2LMHeadModel")


def test_bytes_already_on_disk_are_not_fetched_again(on_hub, hub):
    weights = hub.repos["acme/tiny-chat"]["files"]["model.safetensors"]
    half = len(weights) // 2
    folder = staging(on_hub, "acme/tiny-chat")
    folder.mkdir(parents=True)
    (folder / "model.safetensors.part").write_bytes(weights[:half])

    done = download.run(asked("acme/tiny-chat"), WORKER)

    assert done["state"] == "done", done["error"]
    assert [request for request in hub.requests if request[0] == "model.safetensors"] == [
        ("model.safetensors", f"bytes={half}-")]
    assert hub.served["model.safetensors"] == len(weights) - half
    assert (on_hub.BLAZE_MODELS_DIR / "tiny-chat" / "model.safetensors").read_bytes() == weights


def test_a_missing_repository_fails_saying_so(on_hub, hub):
    failed = download.run(asked("acme/nothing"), WORKER)
    assert failed["state"] == "failed"
    assert failed["error"] == (f"No repository acme/nothing on {hub.endpoint} (or it is private: set HF_TOKEN on "
                               f"worker {WORKER} to a token of an account that may read it).")
    on_hub.HF_TOKEN = "hf_right"  # with a token the hub says 404, not 401
    assert download.run(asked("acme/nothing"), WORKER)["error"] == f"No repository acme/nothing on {hub.endpoint}."
    assert download.run(asked("acme/tiny-chat", revision="v9"), WORKER)["error"] == (
        f"acme/tiny-chat has no revision v9 on {hub.endpoint}.")
    assert not staging(on_hub, "acme/nothing").exists() and hub.requests == []  # no file asked for


def test_a_gated_repository_needs_a_token_with_access(on_hub, hub):
    failed = download.run(asked("acme/locked"), WORKER)
    assert failed["state"] == "failed"
    assert failed["error"] == (f"acme/locked is gated on {hub.endpoint}: it needs a token. Accept its conditions "
                               f"on its page there, then set HF_TOKEN on worker {WORKER} to a token of an account "
                               "that may read it.")
    on_hub.HF_TOKEN = "hf_wrong"
    assert download.run(asked("acme/locked"), WORKER)["error"] == (
        f"acme/locked is gated on {hub.endpoint} and the token in HF_TOKEN on worker {WORKER} has no access to it: "
        "accept its conditions on its page there with the token's account.")
    assert not staging(on_hub, "acme/locked").exists()  # nothing left behind
    on_hub.HF_TOKEN = "hf_right"
    assert download.run(asked("acme/locked"), WORKER)["state"] == "done"
    assert (on_hub.BLAZE_MODELS_DIR / "locked" / "config.json").is_file()


def test_a_full_disk_fails_before_fetching_and_while_writing(on_hub, hub, small_disk):
    on_hub.BLAZE_MODELS_DIR = small_disk
    total = sum(len(data) for data in hub.repos["acme/tiny-chat"]["files"].values())
    (small_disk / "filler").write_bytes(b"\0" * (shutil.disk_usage(small_disk).free - total // 2))
    refused = download.run(asked("acme/tiny-chat"), WORKER)
    assert refused["state"] == "failed" and hub.requests == []  # no file asked for
    message = refused["error"].replace("\xa0", " ")
    assert message.startswith(f"The worker's disk is full: acme/tiny-chat needs {_size(total)} more under "
                              f"{small_disk} on worker {WORKER}, which has ")
    assert message.endswith(" free.")

    # Room when it starts, none midway: another writer takes it.
    (small_disk / "filler").unlink()
    hub.pace = 400_000
    download_id = asked("acme/tiny-chat")
    running = threading.Thread(target=download.run, args=(download_id, WORKER))
    running.start()
    wait_for(lambda: downloads.get(download_id)["bytes_done"] > 0, 10, "the download under way")
    (small_disk / "filler").write_bytes(b"\0" * max(0, shutil.disk_usage(small_disk).free - 8192))
    running.join(timeout=10)
    failed = downloads.get(download_id)
    assert failed["state"] == "failed" and failed["error"].startswith("The worker's disk is full: acme/tiny-chat needs")
    assert not staging(on_hub, "acme/tiny-chat").exists()  # what it fetched is deleted: the space is back


def _size(count):
    from django.template.defaultfilters import filesizeformat

    return filesizeformat(count).replace("\xa0", " ")


def test_cancel_stops_the_download_and_deletes_what_it_fetched(on_hub, hub):
    hub.pace = 100_000
    download_id = asked("acme/tiny-chat")
    running = threading.Thread(target=download.run, args=(download_id, WORKER))
    running.start()
    wait_for(lambda: downloads.get(download_id)["bytes_done"] > 0, 10, "the download under way")
    downloads.request_cancel(download_id)
    running.join(timeout=5)
    assert not running.is_alive()
    assert downloads.get(download_id)["state"] == "cancelled"
    assert not staging(on_hub, "acme/tiny-chat").exists() and not (on_hub.BLAZE_MODELS_DIR / "tiny-chat").exists()


def test_the_api_refuses_bad_input_naming_the_field(db, own_redis_prefix, client_for, operator_user, viewer_user):
    api = client_for(operator_user)

    def refused(body):
        response = api.post("/api/models/downloads/", body, format="json")
        assert response.status_code == 400, response.content
        return response.json()["fields"]

    assert list(refused({"repo": "a/b/c", "worker": WORKER})) == ["repo"]
    assert list(refused({"repo": "acme/tiny", "revision": "../x", "worker": WORKER})) == ["revision"]
    assert refused({"repo": "acme/tiny", "worker": "nobody@nowhere"})["worker"] == [
        "No live worker nobody@nowhere: choose one that is running (the Workers page lists them)."]
    assert list(refused({"repo": "acme/tiny"})) == ["worker"]
    assert list(refused({"repo": "acme/tiny", "worker": WORKER, "file": "x"})) == ["file"]
    viewer = client_for(viewer_user)
    assert viewer.post("/api/models/downloads/", {"repo": "acme/tiny", "worker": WORKER},
                       format="json").status_code == 403
    assert viewer.get("/api/models/downloads/").json() == []
    assert viewer.get("/api/models/downloads/nothing/").status_code == 404
    assert api.post("/api/models/downloads/nothing/cancel/").status_code == 404


def test_cancelling_a_download_whose_worker_is_gone_ends_it_and_is_audited(db, own_redis_prefix, client_for,
                                                                          operator_user, viewer_user):
    download_id = asked("acme/tiny-chat", worker="gone@nowhere")
    row = client_for(viewer_user).get(f"/api/models/downloads/{download_id}/").json()
    assert (row["state"], row["worker_lost"], row["cancelling"]) == ("queued", True, False)
    assert client_for(viewer_user).post(f"/api/models/downloads/{download_id}/cancel/").status_code == 403

    api = client_for(operator_user)
    cancelled = api.post(f"/api/models/downloads/{download_id}/cancel/")
    assert cancelled.status_code == 200, cancelled.content
    assert (cancelled.json()["state"], cancelled.json()["worker_lost"]) == ("cancelled", False)
    again = api.post(f"/api/models/downloads/{download_id}/cancel/")
    assert again.status_code == 400
    assert again.json()["error"] == "The download of acme/tiny-chat is already cancelled: nothing to cancel."
    event = AuditEvent.objects.get(action="model.download_cancel")
    assert (event.target, event.data) == ("acme/tiny-chat@main", {"worker": "gone@nowhere", "download": download_id})


# A real worker: asked over the API, killed mid-download and started again.


@pytest.fixture
def hub_worker(hub, django_db_blocker, tmp_path):
    """start() → a worker (dl@test) downloading from `hub` with its token, into tmp_path/models."""
    (tmp_path / "models").mkdir()
    env = {"HF_ENDPOINT": hub.endpoint, "HF_TOKEN": "hf_right", "BLAZE_MODELS_DIR": str(tmp_path / "models"),
           "BLAZE_CATALOG_SECONDS": "30"}
    started = []

    def start():
        with django_db_blocker.unblock():
            started.append(start_worker(tmp_path, "dl", threads=2, **env))
        return started[-1]

    start.models = tmp_path / "models"
    yield start
    for process in started:
        process.stop()


@pytest.mark.slow
def test_a_worker_killed_mid_download_goes_on_from_its_bytes_when_it_restarts(hub, hub_worker, db, client_for,
                                                                              operator_user):
    worker, api = hub_worker(), client_for(operator_user)
    hub.pace = 150_000
    started = api.post("/api/models/downloads/", {"repo": "acme/tiny-chat", "worker": worker.hostname},
                       format="json")
    assert started.status_code == 202, started.content
    row = started.json()
    assert (row["repo"], row["revision"], row["requested_by"]) == ("acme/tiny-chat", "main", operator_user.username)
    assert row["state"] in ("queued", "running")  # the worker may have begun already
    download_id = row["id"]
    assert AuditEvent.objects.get(action="model.download").data == {"worker": worker.hostname, "download": download_id}
    same_folder = api.post("/api/models/downloads/", {"repo": "other/tiny-chat", "worker": worker.hostname},
                           format="json")
    assert same_folder.status_code == 400 and list(same_folder.json()["fields"]) == ["repo"]

    weights = hub.repos["acme/tiny-chat"]["files"]["model.safetensors"]
    part = hub_worker.models / download.STAGING / "acme--tiny-chat@main" / "model.safetensors.part"
    wait_for(lambda: part.is_file() and part.stat().st_size > len(weights) // 4, 30, "the weights under way", worker)
    worker.kill()
    cut = part.stat().st_size
    assert 0 < cut < len(weights)
    assert downloads.get(download_id)["state"] == "running"  # as the killed worker left it

    worker = hub_worker()
    wait_for(lambda: downloads.get(download_id)["state"] != "running", 30, "the download resumed and done", worker)
    done = api.get(f"/api/models/downloads/{download_id}/").json()
    assert (done["state"], done["error"], done["bytes_done"]) == ("done", "", done["bytes_total"])
    asks = [request for request in hub.requests if request[0] == "model.safetensors"]
    assert asks == [("model.safetensors", None), ("model.safetensors", f"bytes={cut}-")]
    assert (hub_worker.models / "tiny-chat" / "model.safetensors").read_bytes() == weights
    # Its catalog is published at once: the model is on the Models page without waiting for a scan.
    assert any(row["path"] == str(hub_worker.models / "tiny-chat") for row in catalog.models())

    # The worker says why a download fails: here, a repository the hub does not have.
    missing = api.post("/api/models/downloads/", {"repo": "acme/nothing", "worker": worker.hostname},
                       format="json").json()["id"]
    wait_for(lambda: downloads.get(missing)["state"] == "failed", 20, "the download failed", worker)
    [row] = [row for row in api.get("/api/models/downloads/").json() if row["id"] == missing]
    assert (row["error"], row["target"]) == (f"No repository acme/nothing on {hub.endpoint}.",
                                             str(hub_worker.models / "nothing"))

