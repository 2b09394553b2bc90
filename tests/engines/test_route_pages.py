"""The route pages: the list and its new-route form, one route with its settings, targets and live
table, and who may change what."""

import pytest

from accounts.models import AuditEvent
from engines.models import Engine, Route, RouteTarget
from engines.serving.router import state


@pytest.fixture
def route(db):
    route = Route.objects.create(name="chat", description="the chat models")
    far = Engine.objects.create(name="far", kind="llm", backend="remote", base_url="https://llm.example.com/v1")
    RouteTarget.objects.create(route=route, engine=far, weight=3)
    Engine.objects.create(name="tiny", kind="llm", model="tiny-llm")
    return route


def far_id(route):
    return route.targets.get(engine__name="far").pk


def test_viewer_sees_the_list_and_the_nav_link(viewer, route):
    page = viewer.get("/engines/routes/").content.decode()
    assert 'href="/engines/routes/chat/"' in page and "Round robin" in page and "1 enabled of 1" in page
    assert 'class="active">Routes</a>' in page
    assert "New route" not in page


def test_route_page_renders_targets_and_follows_the_live_feed(viewer, route):
    state.release(far_id(route), 0.25, True, lease=state.acquire(far_id(route)))
    page = viewer.get("/engines/routes/chat/").content.decode()
    assert f'data-target="{far_id(route)}"' in page and 'href="/engines/far/">far</a>' in page
    assert "250 ms" in page and "100%" in page  # p50 and share, before the first poll
    assert 'data-route="chat"' in page and "/static/js/live.js" in page and "/static/js/route.js" in page
    assert "Add a target" not in page and 'name="strategy"' not in page


def test_status_json_answers_the_pages_session(viewer, route):
    [row] = viewer.get("/api/routes/chat/status/").json()["targets"]
    assert (row["engine"], row["weight"], row["available"], row["in_flight"]) == ("far", 3, True, 0)


def test_viewer_cannot_change_anything(viewer, route):
    target = far_id(route)
    for url, data in [
        ("/engines/routes/", {"name": "mine"}), ("/engines/routes/chat/", {"strategy": "random"}),
        ("/engines/routes/chat/delete/", {}), ("/engines/routes/chat/targets/", {"engine": "tiny"}),
        (f"/engines/routes/chat/targets/{target}/", {"weight": "9"}),
        (f"/engines/routes/chat/targets/{target}/toggle/", {}), (f"/engines/routes/chat/targets/{target}/remove/", {}),
    ]:
        assert viewer.post(url, data).status_code == 403, url
    assert (Route.objects.get().strategy, RouteTarget.objects.get().weight) == ("round_robin", 3)


def test_operator_creates_a_route_from_the_list(operator, db):
    response = operator.post("/engines/routes/", {"name": "embed", "strategy": "least_connections",
                                                  "sticky_ttl_seconds": "300", "description": ""})
    assert response.status_code == 302 and response["Location"] == "/engines/routes/embed/"
    assert Route.objects.get(name="embed").strategy == "least_connections"
    assert AuditEvent.objects.filter(action="route.create", target="embed").exists()


def test_bad_route_form_is_a_400_showing_the_error(operator, route):
    response = operator.post("/engines/routes/", {"name": "chat", "strategy": "fastest", "sticky_ttl_seconds": "300"})
    assert response.status_code == 400
    page = response.content.decode()
    assert "route with this name already exists." in page and "is not a valid choice." in page


def test_operator_changes_the_strategy(operator, route):
    response = operator.post("/engines/routes/chat/", {"strategy": "ip_hash", "sticky_ttl_seconds": "30",
                                                       "description": "sticky", "enabled": "on"})
    assert response.status_code == 302
    route.refresh_from_db()
    assert ((route.strategy, route.sticky_ttl_seconds, route.description, route.enabled)
            == ("ip_hash", 30, "sticky", True))


def test_unchecked_enabled_disables_the_route(operator, route):
    operator.post("/engines/routes/chat/", {"strategy": "round_robin", "sticky_ttl_seconds": "300"})
    assert Route.objects.get().enabled is False


def test_operator_adds_a_target_and_a_duplicate_is_refused(operator, route):
    assert operator.post("/engines/routes/chat/targets/",
                         {"engine": "tiny", "worker": "w1", "weight": "2"}).status_code == 302
    assert list(route.targets.values_list("engine__name", "worker", "weight")) == [("far", "", 3), ("tiny", "w1", 2)]
    again = operator.post("/engines/routes/chat/targets/", {"engine": "tiny", "worker": "w1", "weight": "2"})
    assert again.status_code == 400
    assert "The route already sends to tiny on worker w1." in again.content.decode()


def test_operator_sets_weight_toggles_and_removes_a_target(operator, route):
    target = far_id(route)
    assert operator.post(f"/engines/routes/chat/targets/{target}/", {"weight": "7"}).status_code == 302
    assert operator.post(f"/engines/routes/chat/targets/{target}/", {"weight": "0"}).status_code == 400
    assert RouteTarget.objects.get().weight == 7
    operator.post(f"/engines/routes/chat/targets/{target}/toggle/")
    assert RouteTarget.objects.get().enabled is False
    operator.post(f"/engines/routes/chat/targets/{target}/remove/")
    assert not RouteTarget.objects.exists()
    assert [e.action for e in AuditEvent.objects.order_by("id")] == [
        "route.target_update", "route.target_update", "route.target_remove"]


def test_operator_deletes_the_route(operator, route):
    assert operator.post("/engines/routes/chat/delete/")["Location"] == "/engines/routes/"
    assert not Route.objects.exists()


def test_unknown_route_page_is_404(viewer, db):
    assert viewer.get("/engines/routes/nope/").status_code == 404


def test_route_page_without_redis_shows_the_targets_and_says_why_numbers_are_missing(viewer, route, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    response = viewer.get("/engines/routes/chat/")
    assert response.status_code == 200
    page = response.content.decode()
    assert f'data-target="{far_id(route)}"' in page and "Redis does not answer" in page


def test_bad_settings_are_a_400_showing_the_error(operator, route):
    response = operator.post("/engines/routes/chat/", {"strategy": "fastest", "sticky_ttl_seconds": "300",
                                                       "enabled": "on"})
    assert response.status_code == 400
    assert "is not a valid choice." in response.content.decode()
    assert Route.objects.get().strategy == "round_robin"


def test_operator_resets_an_open_breaker_from_the_page_and_it_is_audited(operator, route):
    from engines.serving.resilience.breaker import OPEN, CircuitBreaker

    breaker = CircuitBreaker("far", failure_threshold=2)
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state() == OPEN
    page = operator.get("/engines/routes/chat/").content.decode()
    assert 'data-field="breaker"><span class="badge open">open' in page and "Reset breaker" in page
    assert operator.post(f"/engines/routes/chat/targets/{far_id(route)}/reset-breaker/").status_code == 302
    assert breaker.state() == "closed"
    event = AuditEvent.objects.get(action="route.breaker_reset")
    assert event.changes == {"breaker": ["open", "closed"]} and event.data["target"] == "far"


def test_viewer_cannot_reset_a_breaker(viewer, route):
    assert viewer.post(f"/engines/routes/chat/targets/{far_id(route)}/reset-breaker/").status_code == 403


def test_operator_sets_the_fallbacks_in_order_and_the_page_shows_them(operator, route):
    Route.objects.create(name="backup")
    response = operator.post("/engines/routes/chat/", {"strategy": "round_robin", "sticky_ttl_seconds": "300",
                                                       "enabled": "on", "fallbacks": "backup, tiny"})
    assert response.status_code == 302
    assert route.fallback_names() == ["backup", "tiny"]
    page = operator.get("/engines/routes/chat/").content.decode()
    assert 'name="fallbacks" value="backup, tiny"' in page
    assert ('<a href="/engines/routes/backup/">backup</a> <span class="muted">(route)</span> → '
            '<a href="/engines/tiny/">tiny</a> <span class="muted">(engine)</span>') in page
    assert "backup → tiny" in operator.get("/engines/routes/").content.decode()
    [event] = AuditEvent.objects.filter(action="route.update")
    assert event.changes == {"fallbacks": ["", "backup, tiny"]}


def test_a_bad_fallback_on_the_page_is_a_400_saying_why_and_keeps_what_was_typed(operator, route):
    response = operator.post("/engines/routes/chat/", {"strategy": "round_robin", "sticky_ttl_seconds": "300",
                                                       "enabled": "on", "fallbacks": "tiny, chat"})
    assert response.status_code == 400
    page = response.content.decode()
    assert "The route chat cannot fall back to itself." in page and 'value="tiny, chat"' in page
    assert route.fallback_names() == []


def test_viewer_sees_the_fallbacks_but_no_field_to_change_them(viewer, route):
    from engines.models import RouteFallback

    RouteFallback.objects.create(route=route, position=0, engine_fallback=Engine.objects.get(name="tiny"))
    page = viewer.get("/engines/routes/chat/").content.decode()
    assert "requests go to:" in page and '<a href="/engines/tiny/">tiny</a>' in page
    assert 'name="fallbacks"' not in page
    assert viewer.post("/engines/routes/chat/", {"fallbacks": ""}).status_code == 403
    assert route.fallback_names() == ["tiny"]
