"""Signing in: the login page, lockout after repeated failures, sign-out, and the token endpoints."""

import pytest
from django.conf import settings

from accounts.models import AuditEvent
from tests.conftest import PASSWORD, make_user

TOKEN_ENDPOINTS = ["/api/token/", "/api/auth/token/"]


def sign_in(client, username, password=PASSWORD, **extra):
    return client.post("/login/", {"username": username, "password": password}, **extra)


def test_good_password_signs_in_and_is_audited(client, operator_user):
    response = sign_in(client, "otto")

    assert response.status_code == 302
    assert response["Location"] == "/"  # the overview
    assert AuditEvent.objects.filter(action="auth.login", actor="otto").count() == 1


def test_unsafe_next_is_ignored(client, operator_user):
    response = client.post("/login/", {"username": "otto", "password": PASSWORD, "next": "https://evil.example/"})

    assert response["Location"] == "/"  # the overview


def test_bad_password_shows_an_error_and_is_audited(client, operator_user):
    response = sign_in(client, "otto", "wrong-password")

    assert response.status_code == 200
    assert "incorrect" in response.content.decode()
    assert "_auth_user_id" not in client.session
    assert AuditEvent.objects.filter(action="auth.login_failed", target="otto").count() == 1


def test_repeated_failures_lock_the_username(client, operator_user):
    for _ in range(settings.BLAZE_LOCKOUT_FAILURES):
        sign_in(client, "otto", "wrong-password")

    response = sign_in(client, "otto")
    assert response.status_code == 200
    assert "Too many failed sign-in attempts" in response.content.decode()
    assert "_auth_user_id" not in client.session
    assert AuditEvent.objects.filter(action="auth.lockout", target="otto").count() == 1


def test_one_failure_short_of_lockout_still_signs_in(client, operator_user):
    for _ in range(settings.BLAZE_LOCKOUT_FAILURES - 1):
        sign_in(client, "otto", "wrong-password")

    assert sign_in(client, "otto").status_code == 302
    assert not AuditEvent.objects.filter(action="auth.lockout").exists()


def test_successful_sign_in_clears_the_failure_count(client, operator_user):
    for _ in range(settings.BLAZE_LOCKOUT_FAILURES - 1):
        sign_in(client, "otto", "wrong-password")
    sign_in(client, "otto")
    client.logout()
    sign_in(client, "otto", "wrong-password")

    assert sign_in(client, "otto").status_code == 302


def test_failures_from_one_ip_lock_that_ip(client, settings, operator_user):
    settings.BLAZE_LOCKOUT_IP_FAILURES = 3
    for username in ("alice", "bob", "carol"):
        sign_in(client, username, "guess", REMOTE_ADDR="203.0.113.7")

    locked = sign_in(client, "otto", REMOTE_ADDR="203.0.113.7")
    assert "Too many failed sign-in attempts" in locked.content.decode()
    assert AuditEvent.objects.filter(action="auth.lockout").count() == 1
    assert sign_in(client, "otto", REMOTE_ADDR="198.51.100.1").status_code == 302


@pytest.mark.parametrize("path", TOKEN_ENDPOINTS)
def test_token_endpoints_share_the_lockout(path, api, operator_user):
    for _ in range(settings.BLAZE_LOCKOUT_FAILURES):
        assert api.post(path, {"username": "otto", "password": "wrong-password"}).status_code == 401

    response = api.post(path, {"username": "otto", "password": PASSWORD})
    assert response.status_code == 401
    assert "Too many failed sign-in attempts" in response.json()["error"]


def test_lockout_on_the_page_applies_to_the_api(client, api, operator_user):
    for _ in range(settings.BLAZE_LOCKOUT_FAILURES):
        sign_in(client, "otto", "wrong-password")

    assert api.post("/api/token/", {"username": "otto", "password": PASSWORD}).status_code == 401


@pytest.mark.parametrize("path", TOKEN_ENDPOINTS)
def test_token_endpoint_bad_password_is_401(path, api, operator_user):
    response = api.post(path, {"username": "otto", "password": "wrong-password"})

    assert response.status_code == 401
    assert "incorrect" in response.json()["error"]


def test_logout_is_audited(client, operator_user):
    sign_in(client, "otto")

    response = client.post("/logout/")
    assert response["Location"] == "/login/"
    assert "_auth_user_id" not in client.session
    assert AuditEvent.objects.filter(action="auth.logout", actor="otto").count() == 1


def test_jwt_pair_signs_api_calls(api, bearer, operator_user):
    tokens = api.post("/api/token/", {"username": "otto", "password": PASSWORD}).json()

    response = bearer(tokens["access"]).get("/api/me/")
    assert response.status_code == 200
    assert response.json()["username"] == "otto"
    assert tokens["refresh"]


def test_jwt_refresh_gives_a_working_access_token(api, bearer, operator_user):
    refresh = api.post("/api/token/", {"username": "otto", "password": PASSWORD}).json()["refresh"]

    response = api.post("/api/token/refresh/", {"refresh": refresh})
    assert response.status_code == 200
    assert bearer(response.json()["access"]).get("/api/me/").json()["username"] == "otto"


def test_drf_token_signs_api_calls(api, operator_user):
    token = api.post("/api/auth/token/", {"username": "otto", "password": PASSWORD}).json()["token"]

    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert api.get("/api/me/").json()["username"] == "otto"


def test_sign_in_is_audited_with_the_clients_ip(client, db):
    make_user("ivy", "viewer")
    sign_in(client, "ivy", REMOTE_ADDR="192.0.2.10")

    assert AuditEvent.objects.get(action="auth.login").ip == "192.0.2.10"


def test_lockout_message_says_how_long_to_wait(api, settings, operator_user):
    settings.BLAZE_LOCKOUT_SECONDS = 600
    for _ in range(settings.BLAZE_LOCKOUT_FAILURES):
        api.post("/api/token/", {"username": "otto", "password": "wrong-password"})

    response = api.post("/api/token/", {"username": "otto", "password": PASSWORD})
    assert "Try again in 10 minutes" in response.json()["error"]
