"""Routes over the native API: /api/routes/<name>/, …/targets/, …/status/, and the audit trail of
every change."""


import pytest

from accounts.models import AuditEvent
from engines.models import Engine, Route, RouteTarget
from engines.serving.router import state


@pytest.fixture
def engines(db):
    Engine.objects.create(name="tiny", kind="llm", model="tiny-llm")
    Engine.objects.create(name="far", kind="llm", backend="remote", base_url="https://llm.example.com/v1")
    Engine.objects.create(name="minilm", kind="embedding", model="minilm")


@pytest.fixture
def operator(operator_user, client_for):
    return client_for(operator_user)


@pytest.fixture
def viewer(viewer_user, client_for):
    return client_for(viewer_user)


@pytest.fixture
def chat(operator, engines):
    """Route `chat` over `tiny` (any worker) and `far`; returns {engine name: target id}."""
    assert operator.post("/api/routes/", {"name": "chat", "strategy": "round_robin"}, format="json").status_code == 201
    ids = {}
    for engine in ("tiny", "far"):
        response = operator.post("/api/routes/chat/targets/", {"engine": engine}, format="json")
        assert response.status_code == 201, response.json()
        ids[engine] = response.json()["id"]
    return ids


def events(prefix="route."):
    return list(AuditEvent.objects.filter(action__startswith=prefix).order_by("id"))


def test_create_list_and_retrieve_by_name(operator, chat):
    operator.post("/api/routes/", {"name": "embed", "strategy": "least_connections"}, format="json")
    assert [r["name"] for r in operator.get("/api/routes/").json()["results"]] == ["chat", "embed"]
    body = operator.get("/api/routes/chat/").json()
    assert (body["strategy"], body["enabled"], body["sticky_ttl_seconds"]) == ("round_robin", True, 300)
    assert [(t["engine"], t["backend"], t["worker"], t["weight"]) for t in body["targets"]] == [
        ("tiny", "local", "", 1), ("far", "remote", "", 1)]


def test_a_taken_route_name_is_a_409_naming_name(operator, chat):
    response = operator.post("/api/routes/", {"name": "chat"}, format="json")
    assert response.status_code == 409 and list(response.json()["fields"]) == ["name"]


def test_a_route_may_share_an_engines_name(operator, engines):
    assert operator.post("/api/routes/", {"name": "tiny"}, format="json").status_code == 201


def test_update_and_delete_a_route(operator, chat):
    response = operator.patch("/api/routes/chat/", {"strategy": "ip_hash", "sticky_ttl_seconds": 60}, format="json")
    assert response.status_code == 200
    assert (response.json()["strategy"], response.json()["sticky_ttl_seconds"]) == ("ip_hash", 60)
    assert operator.delete("/api/routes/chat/").status_code == 204
    assert not RouteTarget.objects.exists()


def test_unknown_route_is_a_json_404(operator, db):
    missing = operator.get("/api/routes/nope/")
    assert missing.status_code == 404 and "error" in missing.json()
    assert operator.get("/api/routes/nope/targets/").json() == {"error": "No route named 'nope'."}


@pytest.mark.parametrize("body, field, message", [
    ({"name": "chat", "strategy": "fastest"}, "strategy", '"fastest" is not a valid choice.'),
    ({"name": "has space"}, "name", "Enter a valid"),
    ({"name": "chat", "sticky_ttl_seconds": 0}, "sticky_ttl_seconds", "greater than or equal to 1"),
    ({"name": "chat", "color": "red"}, "color", "Unknown field."),
])
def test_bad_route_input_is_a_400_naming_the_field(operator, db, body, field, message):
    response = operator.post("/api/routes/", body, format="json")
    assert response.status_code == 400
    assert message in response.json()["fields"][field][0]


@pytest.mark.parametrize("body, field, message", [
    ({"engine": "tiny", "weight": 0}, "weight", "greater than or equal to 1"),
    ({"engine": "nope"}, "engine", "No engine named 'nope'."),
    ({"engine": "minilm"}, "engine", "This route's targets are llm engines; minilm is embedding."),
    ({"engine": "far", "worker": "w1"}, "worker", "Only a local engine runs on a worker"),
])
def test_bad_target_input_is_a_400_naming_the_field(operator, chat, body, field, message):
    response = operator.post("/api/routes/chat/targets/", body, format="json")
    assert response.status_code == 400
    assert response.json()["fields"][field] == [message] or message in response.json()["fields"][field][0]


def test_a_target_already_on_the_route_is_a_409_naming_engine(operator, chat):
    response = operator.post("/api/routes/chat/targets/", {"engine": "tiny"}, format="json")
    assert response.status_code == 409
    assert response.json()["fields"] == {"engine": ["The route already sends to tiny on any worker."]}


def test_a_target_may_pin_a_worker_once_per_worker(operator, chat):
    assert operator.post("/api/routes/chat/targets/", {"engine": "tiny", "worker": "w1"},
                         format="json").status_code == 201
    assert operator.post("/api/routes/chat/targets/", {"engine": "tiny", "worker": "w1"},
                         format="json").status_code == 409


def test_change_weight_enable_disable_and_remove_a_target(operator, chat):
    url = f"/api/routes/chat/targets/{chat['far']}/"
    assert operator.patch(url, {"weight": 5}, format="json").json()["weight"] == 5
    assert operator.post(f"{url}disable/").json()["enabled"] is False
    assert operator.post(f"{url}enable/").json()["enabled"] is True
    assert operator.delete(url).status_code == 204
    assert [t["engine"] for t in operator.get("/api/routes/chat/targets/").json()] == ["tiny"]


def test_a_targets_engine_cannot_change(operator, chat):
    response = operator.patch(f"/api/routes/chat/targets/{chat['far']}/", {"engine": "tiny"}, format="json")
    assert response.status_code == 400
    assert "engine" in response.json()["fields"]


def test_viewer_reads_routes_but_cannot_change_them(viewer, chat):
    assert viewer.get("/api/routes/chat/").status_code == 200
    assert viewer.get("/api/routes/chat/targets/").status_code == 200
    assert viewer.get("/api/routes/chat/status/").status_code == 200
    assert viewer.post("/api/routes/", {"name": "mine"}, format="json").status_code == 403
    assert viewer.patch("/api/routes/chat/", {"strategy": "random"}, format="json").status_code == 403
    assert viewer.delete("/api/routes/chat/").status_code == 403
    assert viewer.post("/api/routes/chat/targets/", {"engine": "tiny", "worker": "w9"},
                       format="json").status_code == 403
    assert viewer.patch(f"/api/routes/chat/targets/{chat['far']}/", {"weight": 3}, format="json").status_code == 403
    assert viewer.post(f"/api/routes/chat/targets/{chat['far']}/disable/").status_code == 403
    assert viewer.delete(f"/api/routes/chat/targets/{chat['far']}/").status_code == 403
    assert RouteTarget.objects.filter(weight=1, enabled=True).count() == 2


def test_status_shows_each_targets_live_state(operator, chat, own_redis_prefix):
    # A Redis prefix of its own: no worker heartbeats there, whatever workers earlier tests started.
    for latency in (0.1, 0.2):
        state.release(chat["far"], latency, True, lease=state.acquire(chat["far"]))
    state.acquire(chat["far"])
    far, tiny = sorted(operator.get("/api/routes/chat/status/").json()["targets"], key=lambda t: t["engine"])
    assert (far["available"], far["in_flight"], far["share"], far["error_rate"], far["p50"], far["p95"]) == (
        True, 1, 1.0, 0.0, 0.1, 0.2)
    assert (tiny["available"], tiny["reason"], tiny["in_flight"], tiny["share"]) == (False, "no live worker", 0, 0.0)


def test_every_route_change_is_audited_with_what_changed(operator, chat):
    target = f"/api/routes/chat/targets/{chat['far']}/"
    operator.patch("/api/routes/chat/", {"strategy": "random", "description": "both"}, format="json")
    operator.patch(target, {"weight": 4}, format="json")
    operator.post(f"{target}disable/")
    operator.delete(target)
    operator.delete("/api/routes/chat/")
    recorded = [(e.action, e.data.get("target", e.target), e.changes) for e in events()]
    assert recorded[:3] == [
        ("route.create", "chat", {"name": [None, "chat"], "strategy": [None, "round_robin"],
                                  "sticky_ttl_seconds": [None, 300], "enabled": [None, True],
                                  "keep_prompts": [None, False]}),
        ("route.target_add", "tiny", {"engine": [None, "tiny"], "weight": [None, 1], "enabled": [None, True]}),
        ("route.target_add", "far", {"engine": [None, "far"], "weight": [None, 1], "enabled": [None, True]}),
    ]
    assert recorded[3:] == [
        ("route.update", "chat", {"description": ["", "both"], "strategy": ["round_robin", "random"]}),
        ("route.target_update", "far", {"weight": [1, 4]}),
        ("route.target_update", "far", {"enabled": [True, False]}),
        ("route.target_remove", "far", {"engine": ["far", None], "weight": [4, None], "enabled": [False, None]}),
        ("route.delete", "chat", {"name": ["chat", None], "strategy": ["random", None],
                                  "sticky_ttl_seconds": [300, None], "enabled": [True, None],
                                  "description": ["both", None], "keep_prompts": [False, None]}),
    ]
    assert all(e.actor == "otto" and e.target_type == "engines.route" for e in events())


def test_an_unchanged_save_records_nothing(operator, chat):
    before = len(events())
    operator.patch("/api/routes/chat/", {"strategy": "round_robin"}, format="json")
    operator.patch(f"/api/routes/chat/targets/{chat['far']}/", {"weight": 1}, format="json")
    assert len(events()) == before


def test_deleting_an_engine_removes_its_targets_on_the_record(operator, chat):
    assert operator.delete("/api/engines/far/").status_code == 204
    [event] = events("route.target_remove")
    assert (event.target, event.data["target"], event.data["reason"]) == ("chat", "far", "engine deleted")
    assert list(Route.objects.get(name="chat").targets.values_list("engine__name", flat=True)) == ["tiny"]


def test_status_shows_each_targets_breaker_and_health(operator, chat, settings):
    from engines.serving.resilience.breaker import CircuitBreaker
    from engines.serving.resilience.health import HealthMonitor

    for _ in range(settings.BLAZE_BREAKER_FAILURE_THRESHOLD):
        CircuitBreaker("far").record_failure()
    HealthMonitor("far").record(True, 0.1)
    rows = {t["engine"]: t for t in operator.get("/api/routes/chat/status/").json()["targets"]}
    assert (rows["far"]["breaker"], rows["far"]["health"]) == ("open", "healthy")
    assert (rows["tiny"]["breaker"], rows["tiny"]["health"]) == ("closed", "unknown")


def test_status_without_redis_is_a_503_that_still_lists_the_targets(operator, chat, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    response = operator.get("/api/routes/chat/status/")
    assert response.status_code == 503
    assert response.json()["error"] == "Redis does not answer: the live state is unavailable."
    assert [(t["engine"], "in_flight" in t) for t in response.json()["targets"]] == [("tiny", False), ("far", False)]


def test_removing_a_target_or_route_drops_its_redis_state(operator, chat, django_capture_on_commit_callbacks):
    from core import shared_state

    for target in chat.values():
        state.release(target, 0.1, True, lease=state.acquire(target))
    with django_capture_on_commit_callbacks(execute=True):
        operator.delete(f"/api/routes/chat/targets/{chat['far']}/")
    assert not shared_state.client().exists(shared_state.route_target_stats_key(chat["far"]))
    assert shared_state.client().exists(shared_state.route_target_stats_key(chat["tiny"]))
    with django_capture_on_commit_callbacks(execute=True):
        operator.delete("/api/routes/chat/")
    assert not shared_state.client().exists(shared_state.route_target_stats_key(chat["tiny"]))


def test_reset_a_targets_breaker_over_the_api(operator, viewer, chat):
    from engines.serving.resilience.breaker import CircuitBreaker

    breaker = CircuitBreaker("far", failure_threshold=1)
    breaker.record_failure()
    assert operator.get("/api/routes/chat/status/").json()["targets"][1]["breaker"] == "open"
    url = f"/api/routes/chat/targets/{chat['far']}/reset-breaker/"
    assert viewer.post(url).status_code == 403
    response = operator.post(url)
    assert response.status_code == 200 and response.json() == {"id": chat["far"], "breaker": "closed"}
    assert operator.get("/api/routes/chat/status/").json()["targets"][1]["breaker"] == "closed"
    assert events("route.breaker_reset")[0].changes == {"breaker": ["open", "closed"]}


@pytest.fixture
def backup(operator, engines):
    """Route `backup` over `far`, a fallback for `chat`."""
    assert operator.post("/api/routes/", {"name": "backup"}, format="json").status_code == 201
    assert operator.post("/api/routes/backup/targets/", {"engine": "far"}, format="json").status_code == 201


def test_fallbacks_are_read_and_written_as_names_in_order_and_audited(operator, chat, backup):
    response = operator.patch("/api/routes/chat/", {"fallbacks": ["backup", "far"]}, format="json")
    assert response.status_code == 200 and response.json()["fallbacks"] == ["backup", "far"]
    assert operator.get("/api/routes/chat/").json()["fallbacks"] == ["backup", "far"]
    operator.patch("/api/routes/chat/", {"fallbacks": ["far", "backup"]}, format="json")
    assert operator.get("/api/routes/chat/").json()["fallbacks"] == ["far", "backup"]
    assert operator.patch("/api/routes/chat/", {"strategy": "random"}, format="json").json()["fallbacks"] == [
        "far", "backup"]  # a change of something else keeps them
    assert [e.changes for e in events("route.update")][:2] == [
        {"fallbacks": ["", "backup, far"]}, {"fallbacks": ["backup, far", "far, backup"]}]
    assert operator.patch("/api/routes/chat/", {"fallbacks": []}, format="json").json()["fallbacks"] == []


def test_a_route_is_created_with_its_fallbacks(operator, engines):
    response = operator.post("/api/routes/", {"name": "chat", "fallbacks": ["far"]}, format="json")
    assert response.status_code == 201 and response.json()["fallbacks"] == ["far"]
    [created] = events("route.create")
    assert created.changes["fallbacks"] == [None, "far"]


@pytest.mark.parametrize("fallbacks, message", [
    (["nope"], "No route or engine named 'nope'."),
    (["minilm"], "This route's targets are llm engines; minilm is embedding."),
    (["chat"], "The route chat cannot fall back to itself."),
    (["far", "far"], "far is named twice; name each fallback once."),
    ("far", "Expected a list."),
    ([""], "This field may not be blank."),
])
def test_bad_fallbacks_are_a_400_naming_fallbacks(operator, chat, fallbacks, message):
    response = operator.patch("/api/routes/chat/", {"fallbacks": fallbacks}, format="json")
    assert response.status_code == 400
    [(field, messages)] = response.json()["fields"].items()
    assert field.split(".")[0] == "fallbacks" and messages == [message]
    assert operator.get("/api/routes/chat/").json()["fallbacks"] == []


def test_a_loop_of_fallbacks_is_refused(operator, chat, backup):
    operator.post("/api/routes/", {"name": "third", "fallbacks": ["chat"]}, format="json")
    assert operator.patch("/api/routes/backup/", {"fallbacks": ["third"]}, format="json").status_code == 200
    response = operator.patch("/api/routes/chat/", {"fallbacks": ["far", "backup"]}, format="json")
    assert response.status_code == 400
    assert response.json()["fields"]["fallbacks"] == [
        "backup falls back to chat (chat → backup → third → chat): a loop."]
    assert operator.get("/api/routes/chat/").json()["fallbacks"] == []  # nothing of the list was kept


def test_deleting_a_fallback_takes_it_off_the_list_on_the_record(operator, chat, backup):
    operator.patch("/api/routes/chat/", {"fallbacks": ["backup", "far"]}, format="json")
    assert operator.delete("/api/routes/backup/").status_code == 204
    assert operator.get("/api/routes/chat/").json()["fallbacks"] == ["far"]
    assert operator.delete("/api/engines/far/").status_code == 204
    assert operator.get("/api/routes/chat/").json()["fallbacks"] == []
    gone = [(e.changes, e.data) for e in events("route.update") if e.data.get("reason")]
    assert gone == [({"fallbacks": ["backup, far", "far"]}, {"reason": "route deleted"}),
                    ({"fallbacks": ["far", ""]}, {"reason": "engine deleted"})]


def test_viewer_reads_fallbacks_but_cannot_set_them(viewer, operator, chat):
    operator.patch("/api/routes/chat/", {"fallbacks": ["far"]}, format="json")
    assert viewer.get("/api/routes/chat/").json()["fallbacks"] == ["far"]
    assert viewer.patch("/api/routes/chat/", {"fallbacks": []}, format="json").status_code == 403
