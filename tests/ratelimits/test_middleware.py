"""What a client sees of the limits: 429 with Retry-After and X-RateLimit-*, waits, and what is never
limited. Through the Django test client (sync path) and AsyncClient (the async path daphne takes)."""

import asyncio
import logging
import time

from asgiref.sync import async_to_sync
from django.db import OperationalError
from django.test import AsyncClient
from prometheus_client import REGISTRY
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.audit import Actor
from ratelimits import identity, selectors, services
from ratelimits.models import RateLimitPolicy


def rejections(scope, algorithm, action="reject"):
    labels = {"scope": scope, "algorithm": algorithm, "action": action}
    return REGISTRY.get_sample_value("blaze_rate_limit_rejections_total", labels) or 0


def test_over_the_limit_is_429_with_retry_after_and_limit_headers(make_policy, client_for, viewer_user):
    make_policy(scope="user", endpoint="/api/me", limit=2, period_seconds=60)
    client = client_for(viewer_user)
    before = rejections("user", "fixed_window")
    assert [client.get("/api/me/").status_code for _ in range(2)] == [200, 200]
    refused = client.get("/api/me/")
    assert refused.status_code == 429
    assert "Rate limit exceeded" in refused.json()["error"]
    assert 55 <= int(refused["Retry-After"]) <= 60
    assert (refused["X-RateLimit-Limit"], refused["X-RateLimit-Remaining"]) == ("2", "0")
    assert 55 <= int(refused["X-RateLimit-Reset"]) <= 60
    assert rejections("user", "fixed_window") == before + 1


def test_admitted_responses_say_how_many_requests_are_left(make_policy, client_for, viewer_user):
    make_policy(scope="user", limit=3)
    client = client_for(viewer_user)
    assert [client.get("/api/me/")["X-RateLimit-Remaining"] for _ in range(3)] == ["2", "1", "0"]
    assert client.get("/api/me/")["X-RateLimit-Limit"] == "3"


def test_v1_refusal_is_in_openai_error_shape(make_policy, key_for, viewer_user):
    make_policy(scope="api_key", endpoint="/v1/", limit=1)
    _, raw = key_for(viewer_user, ["inference"])
    client = APIClient(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert client.get("/v1/models").status_code == 200
    refused = client.get("/v1/models")
    assert refused.status_code == 429 and "Retry-After" in refused
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limit_exceeded")


def test_each_api_key_has_its_own_count(make_policy, key_for, viewer_user):
    make_policy(scope="api_key", limit=1)
    first, second = (APIClient(HTTP_AUTHORIZATION=f"Bearer {key_for(viewer_user)[1]}") for _ in range(2))
    assert [first.get("/api/me/").status_code, second.get("/api/me/").status_code] == [200, 200]
    assert first.get("/api/me/").status_code == 429


def test_a_users_limit_covers_all_their_credentials(make_policy, client_for, key_for, viewer_user):
    make_policy(scope="user", limit=2)
    by_key = APIClient(HTTP_AUTHORIZATION=f"Bearer {key_for(viewer_user)[1]}")
    by_jwt = APIClient(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(viewer_user).access_token}")
    assert client_for(viewer_user).get("/api/me/").status_code == 200
    assert by_key.get("/api/me/").status_code == 200
    assert by_jwt.get("/api/me/").status_code == 429


def test_a_signed_in_browser_user_is_counted_as_that_user(make_policy, client, viewer_user):
    make_policy(scope="user", limit=1)
    client.force_login(viewer_user)
    assert client.get("/keys/").status_code == 200
    refused = client.get("/keys/")
    assert refused.status_code == 429 and b"Rate limit exceeded" in refused.content


def test_a_per_user_limit_does_not_apply_to_anonymous_requests(make_policy, api):
    make_policy(scope="user", limit=1)
    responses = [api.get("/api/me/") for _ in range(3)]
    assert {response.status_code for response in responses} <= {401, 403}
    assert "X-RateLimit-Limit" not in responses[0]


def test_each_client_ip_has_its_own_count(make_policy, api):
    make_policy(scope="ip", limit=1)
    assert api.get("/api/me/", REMOTE_ADDR="10.0.0.1").status_code != 429
    assert api.get("/api/me/", REMOTE_ADDR="10.0.0.2").status_code != 429
    assert api.get("/api/me/", REMOTE_ADDR="10.0.0.1").status_code == 429


def test_a_per_endpoint_limit_counts_each_endpoint_apart(make_policy, client_for, viewer_user):
    make_policy(scope="endpoint", endpoint="/api/", limit=1)
    client = client_for(viewer_user)
    assert [client.get("/api/me/").status_code, client.get("/api/keys/").status_code] == [200, 200]
    assert client.get("/api/keys/").status_code == 429


def test_a_policy_applies_only_under_its_path_prefix(make_policy, client_for, viewer_user):
    make_policy(endpoint="/v1/", limit=1)
    client = client_for(viewer_user)
    assert [client.get("/api/me/").status_code for _ in range(3)] == [200, 200, 200]


def test_health_static_files_and_metrics_are_never_limited(make_policy, api):
    make_policy(limit=1)
    api.get("/api/me/")
    for path in ("/health", "/health", "/static/css/blaze.css", "/metrics", "/metrics/prometheus"):
        assert api.get(path).status_code != 429, path
    assert api.get("/api/me/").status_code == 429


def test_a_disabled_policy_stops_limiting_at_once(make_policy, client_for, viewer_user,
                                                  django_capture_on_commit_callbacks):
    policy = make_policy(limit=1)
    client = client_for(viewer_user)
    client.get("/api/me/")
    assert client.get("/api/me/").status_code == 429
    with django_capture_on_commit_callbacks(execute=True):
        services.policy_update(actor=Actor.system("test"), policy=policy, enabled=False)
    assert client.get("/api/me/").status_code == 200


def test_the_tightest_of_several_policies_decides(make_policy, client_for, viewer_user):
    make_policy(scope="global", limit=10)
    make_policy(scope="user", limit=1, name="one-per-user")
    client = client_for(viewer_user)
    assert client.get("/api/me/")["X-RateLimit-Remaining"] == "0"
    assert "one-per-user" in client.get("/api/me/").json()["error"]


def test_a_delay_policy_makes_requests_wait_for_their_turn(make_policy, client_for, viewer_user):
    make_policy(algorithm="leaky_bucket", limit=5, period_seconds=1, action="delay", max_delay=0.5)
    client = client_for(viewer_user)
    started = time.monotonic()
    assert [client.get("/api/me/").status_code for _ in range(3)] == [200, 200, 200]
    assert time.monotonic() - started >= 0.35


def test_a_delay_policy_refuses_when_the_wait_would_exceed_max_delay(make_policy, client_for, viewer_user):
    make_policy(algorithm="token_bucket", limit=1, period_seconds=10, action="delay", max_delay=1)
    client = client_for(viewer_user)
    assert client.get("/api/me/").status_code == 200
    started = time.monotonic()
    assert client.get("/api/me/").status_code == 429
    assert time.monotonic() - started < 0.5


def test_a_delayed_window_request_waits_for_the_next_window(make_policy, client_for, viewer_user):
    make_policy(algorithm="fixed_window", limit=1, period_seconds=1, action="delay", max_delay=1.5)
    client = client_for(viewer_user)
    before = rejections("global", "fixed_window", "delay")
    client.get("/api/me/")
    started = time.monotonic()
    assert client.get("/api/me/").status_code == 200
    assert 0.2 < time.monotonic() - started < 1.5
    assert rejections("global", "fixed_window", "delay") == before + 1


def test_async_requests_queue_on_a_leaky_bucket_evenly_spaced(make_policy, viewer_user):
    from rest_framework.authtoken.models import Token

    make_policy(algorithm="leaky_bucket", limit=5, period_seconds=1, action="delay", max_delay=1)
    token = Token.objects.create(user=viewer_user).key
    client = AsyncClient()

    async def timed():
        response = await client.get("/api/me/", headers={"Authorization": f"Token {token}"})
        return response.status_code, time.monotonic()

    async def burst():
        return await asyncio.gather(*(timed() for _ in range(4)))

    results = async_to_sync(burst)()
    assert [status for status, _ in results] == [200] * 4
    finished = sorted(at for _, at in results)
    assert finished[-1] - finished[0] >= 0.55


def test_async_path_refuses_with_429(make_policy):
    make_policy(scope="ip", limit=1)
    client = AsyncClient()
    first = async_to_sync(client.get)("/api/me/")
    second = async_to_sync(client.get)("/api/me/")
    assert first.status_code != 429 and second.status_code == 429
    assert second["X-RateLimit-Remaining"] == "0"


def test_requests_pass_when_redis_is_down(make_policy, client_for, viewer_user, settings, caplog):
    make_policy(limit=1)
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    client = client_for(viewer_user)
    with caplog.at_level(logging.WARNING, logger="ratelimits.admission"):
        assert [client.get("/api/me/").status_code for _ in range(3)] == [200, 200, 200]
    assert "Redis does not answer" in caplog.text


def test_a_too_tight_global_limit_never_locks_operators_out_of_undoing_it(make_policy, client_for, operator_user):
    make_policy(scope="global", limit=1)
    client = client_for(operator_user)
    client.get("/api/me/")
    assert client.get("/api/me/").status_code == 429
    assert all(client.get("/api/ratelimits/").status_code == 200 for _ in range(3))
    assert client.get("/login/").status_code == 200


def _database_away(*args, **kwargs):
    raise OperationalError("connection refused")


def test_the_policies_last_read_stay_in_force_while_the_database_is_away(make_policy, monkeypatch, caplog):
    policy = make_policy(limit=5)
    selectors.load_active_policies()
    monkeypatch.setattr(RateLimitPolicy.objects, "filter", _database_away)
    with caplog.at_level(logging.WARNING, logger="ratelimits.selectors"):
        active = selectors.load_active_policies()
    assert [kept.pk for kept in active.policies] == [policy.pk]
    assert selectors.fresh_active_policies() is active  # not asked again before another cache time
    assert "the database does not answer" in caplog.text


def test_requests_pass_when_a_credentials_owner_cannot_be_read(make_policy, key_for, viewer_user, monkeypatch,
                                                               caplog):
    make_policy(scope="api_key", limit=1)
    client = APIClient(HTTP_AUTHORIZATION=f"Bearer {key_for(viewer_user)[1]}")
    monkeypatch.setattr(identity, "credential_owner", _database_away)
    with caplog.at_level(logging.WARNING, logger="ratelimits.admission"):
        assert [client.get("/api/me/").status_code for _ in range(2)] == [200, 200]
    assert "the database does not answer" in caplog.text
