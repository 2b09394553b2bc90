"""API fuzzing: schemathesis over every operation of /api/schema/, with an admin's key and with a
viewer's, all checks on: no 5xx; statuses, bodies and content types as documented; requests the
schema calls valid accepted, and invalid ones refused. Derandomized, a few examples an operation."""

import json
from datetime import timedelta

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.test import RequestFactory
from django.utils import timezone
from drf_spectacular.views import SpectacularAPIView
from hypothesis import HealthCheck, settings
from schemathesis.openapi.checks import RejectedPositiveData

from accounts import services
from accounts.audit import Actor
from alerts.models import AlertReceiver, AlertRule, AlertSilence
from engines.models import Engine, Route, RouteTarget
from ratelimits.models import RateLimitPolicy
from security.models import IpBlock
from tests.conftest import make_user


def served_schema():
    """What GET /api/schema/ serves, asked of its view: the middleware reads the database, which is
    closed while pytest collects. (schemathesis.pytest.from_fixture would load it inside a test, but
    4.32.5's sets Node._nodeid, which pytest 9 no longer has.)"""
    response = SpectacularAPIView.as_view()(RequestFactory().get("/api/schema/", {"format": "json"}))
    return json.loads(response.render().content)


def fuzzer(*, coverage):
    """The schema, ready to fuzz in this process. `coverage`: schemathesis's coverage phase too (every
    boundary and type the schema names), on top of its examples and 5 generated cases."""
    config = schemathesis.Config.from_dict({
        "seed": 1,
        # No NUL bytes: the threat screen refuses them (400) by design, which no schema can say.
        "generation": {"max-examples": 5, "deterministic": True, "database": "none", "allow-x00": False},
        "phases": {"coverage": {"enabled": coverage}},
        "checks": {"enabled": True},
        # The coverage phase's cases of a change name an object that does not exist (404 before the body
        # is read: hundreds of requests that test nothing); its fuzzing phase's valid cases name one that does.
        "operations": [{"include-method": ["PUT", "PATCH"], "phases": {"coverage": {"enabled": False}}}],
    })
    loaded = schemathesis.openapi.from_dict(served_schema(), config=config)
    loaded.app = get_wsgi_application()
    return loaded


# A viewer is refused every change (403) before any input is read: the coverage phase would add little.
admin_schema, viewer_schema = fuzzer(coverage=True), fuzzer(coverage=False)

TAKEN = "not taken (alone a 409; beside another field's refusal, part of the 400)"
FUTURE = "a time in the future"
# Rules the schema cannot state (uniqueness, the clock, one field against another, what exists):
# a request it calls valid may be refused for them, with a 400 that names the field. Each is allowed
# for the operations under its path and its fields only; any other refusal of valid input fails.
UNSTATED_RULES = {
    "/api/alerts/receivers/": {"name": TAKEN, "url": "a host name of 253 characters at most (Django's URL check)"},
    "/api/alerts/rules/": {
        "name": TAKEN, "matchers": "the keys are labels of the series",
        "annotations": "a template names $labels or $value only",
    },
    "/api/alerts/silences/": {
        "matchers": "a valid regex, and not matching every alert", "ends_at": f"after starts_at, {FUTURE}",
    },
    "/api/audit/": {"until": "not before since"},
    "/api/engines/": {
        "name": TAKEN, "config": "the settings of the engine's kind",
        "model": "required for a local engine; a path a live worker has, that fits a worker's cache",
        "kind": "fixed once registered; the kind of model the workers find", "keep_alive_seconds": "a local engine's",
        "base_url": "a remote engine's, required there", "api_key": "a remote engine's",
    },
    "/api/keys/": {"expires_at": FUTURE, "team": "one of the owner's teams"},
    "/api/metrics/history/": dict.fromkeys(("budget", "engine", "route", "scope", "target", "worker"),
                                           "a label of every series named"),
    "/api/ratelimits/": {
        "name": TAKEN, "burst": "token_bucket and adaptive policies only",
        "max_delay": "required by the delay action, only there",
    },
    "/api/routes/": {
        "name": TAKEN,
        "fallbacks": "routes or engines that exist, of the route's kind, not the route itself, no loop, each once",
    },
    "/api/routes/{route_name}/targets/": {
        "engine": f"an engine that exists, of the route's kind, {TAKEN} on the worker; fixed once added",
        "worker": "a local engine's only, without spaces; fixed once added",
    },
    "/api/security/blocks/": {"network": "an IP address or CIDR network (no OpenAPI 3.0 format)", "expires_at": FUTURE},
    "/api/teams/": {"name": TAKEN},
    "/api/teams/{name}/members/": {"username": "a user that exists"},
    "/api/usage/": {"until": "after since"},
    "/api/usage/budgets/": {
        "name": TAKEN, "limit": "at most 10 digits before the point and 8 after", "target_id": "a key, user or team",
        "soft_limit": "at most 10 digits before the point and 8 after, below limit",
    },
    "/api/models/inspect/": {"model": "a path a live worker has, that fits a worker's cache",
                             "kind": "the kind of model the workers find"},
    "/api/models/downloads/": {"repo": "a hub repository id, org/name, not being fetched into the same folder",
                               "revision": "a branch, tag or commit", "worker": "a live worker"},
    "/api/usage/prices/": {"engine": TAKEN, **dict.fromkeys((
        "per_1m_prompt", "per_1m_cached", "per_1m_completion", "per_image", "per_1m_embedding", "per_worker_hour"),
        "at most 10 digits before the point and 8 after")},
    "/api/users/": {"username": TAKEN},
}


def for_path(table, path):
    """The entry of `table` under the longest of its paths that `path` starts with, or None."""
    return table.get(max((prefix for prefix in table if path.startswith(prefix)), key=len, default=None))


@schemathesis.hook
def filter_failure(context, failure, case, response):
    """Keep every failure but a refusal of valid input for a rule in UNSTATED_RULES."""
    if not isinstance(failure, RejectedPositiveData) or response.status_code != 400:
        return True
    rules = for_path(UNSTATED_RULES, case.operation.path) or {}
    fields = {name.partition(".")[0] for name in response.json().get("fields", {})}  # config.x: config's rule
    return not fields or not fields <= rules.keys()


EXISTING = {}  # path → the path parameters of an object the `existing` fixture made for its operations


@schemathesis.hook
def map_case(context, case):
    """A valid case names an object that exists (ids the fuzzer makes up would only find nothing), so
    that reads and changes of one are fuzzed; an invalid case keeps its own."""
    ours = for_path(EXISTING, case.operation.path)
    if ours is not None and case.meta is not None and case.meta.generation.mode.is_positive:
        case.path_parameters = {name: ours.get(name, value) for name, value in case.path_parameters.items()}
    return case


@pytest.fixture
def existing(db):
    """One object of each kind (workers excepted: their heartbeats come from a live worker process)."""
    engine = Engine.objects.create(name="seed", kind="llm", model="tiny-llm")
    route = Route.objects.create(name="seed")
    target = RouteTarget.objects.create(route=route, engine=engine)
    rule = AlertRule.objects.create(name="seed", series="worker_up", comparator="<", threshold=1,
                                    annotations={"summary": "A worker is down."})
    receiver = AlertReceiver.objects.create(name="seed", url="https://hooks.example.com/blaze")
    silence = AlertSilence.objects.create(matchers=[{"name": "alertname", "value": "seed"}],
                                          ends_at=timezone.now() + timedelta(hours=1))
    policy = RateLimitPolicy.objects.create(name="seed", limit=1000)
    block = IpBlock.objects.create(network="203.0.113.7", reason="seed")
    user = make_user("seed", "viewer")
    key, _ = services.api_key_create(actor=Actor.system("test"), user=user, name="seed", scopes=["read"])
    team = services.team_member_add(actor=Actor.system("test"), user=user,
                                    team=services.team_create(actor=Actor.system("test"), name="seed"))
    EXISTING.clear()
    EXISTING.update({
        "/api/engines/{name}/": {"name": engine.name}, "/api/routes/{name}/": {"name": route.name},
        "/api/routes/{route_name}/targets/": {"route_name": route.name, "id": str(target.pk)},
        "/api/alerts/rules/{name}/": {"name": rule.name}, "/api/alerts/receivers/{id}/": {"id": str(receiver.pk)},
        "/api/alerts/silences/{id}/": {"id": str(silence.pk)}, "/api/ratelimits/{id}/": {"id": str(policy.pk)},
        "/api/security/blocks/{id}/": {"id": block.pk}, "/api/users/{id}/": {"id": user.pk},
        "/api/keys/{id}/": {"id": str(key.pk)},
        "/api/teams/{name}/": {"name": team.name, "username": user.username},
    })


@pytest.fixture
def _open_connection():
    # As Django's test client does: the handler must not close the connection holding the test's transaction.
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    yield
    for signal in (request_started, request_finished):
        signal.connect(close_old_connections)


def key_header(role, scopes):
    user = make_user(f"fuzz-{role}", role)
    _, raw = services.api_key_create(actor=Actor.system("test"), user=user, name="fuzz", scopes=scopes)
    return {"Authorization": f"Bearer {raw}"}


@pytest.fixture
def admin_key(existing, _open_connection):
    return key_header("admin", ["read", "manage"])


@pytest.fixture
def viewer_key(existing, _open_connection):
    return key_header("viewer", ["read"])


# Each operation's examples share the key and the operation's database transaction (rolled back after).
shared_fixtures = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.mark.slow
@pytest.mark.fuzz
@admin_schema.parametrize()
@shared_fixtures
def test_as_admin(case, admin_key):
    case.call_and_validate(headers=admin_key)


@pytest.mark.slow
@pytest.mark.fuzz
@viewer_schema.parametrize()
@shared_fixtures
def test_as_viewer(case, viewer_key):
    case.call_and_validate(headers=viewer_key)
