"""Who may call which endpoint: roles for people, scopes for API keys, 401 for everyone else."""

import pytest

from tests.conftest import make_user

ENDPOINTS = {
    "list engines": ("get", "/api/engines/", None),
    "create engine": ("post", "/api/engines/",
                      {"name": "embedder", "kind": "embedding", "model": "some-org/some-model"}),
    "audit log": ("get", "/api/audit/", None),
    "list keys": ("get", "/api/keys/", None),
    "create key": ("post", "/api/keys/", {"name": "ci", "scopes": ["read"]}),
    "me": ("get", "/api/me/", None),
    "list users": ("get", "/api/users/", None),
    "create user": ("post", "/api/users/", {"username": "newcomer", "password": "a-long-passphrase", "role": "viewer"}),
}

# endpoint: expected status for (admin, operator, viewer)
EXPECTED = {
    "list engines": (200, 200, 200),
    "create engine": (201, 201, 403),
    "audit log": (200, 403, 403),
    "list keys": (200, 200, 200),
    "create key": (201, 201, 201),
    "me": (200, 200, 200),
    "list users": (200, 403, 403),
    "create user": (201, 403, 403),
}

MATRIX = [
    pytest.param(role, endpoint, statuses[index], id=f"{role}-{endpoint.replace(' ', '-')}")
    for endpoint, statuses in EXPECTED.items()
    for index, role in enumerate(("admin", "operator", "viewer"))
]


def call(client, endpoint):
    method, path, body = ENDPOINTS[endpoint]
    return client.get(path) if method == "get" else client.post(path, body, format="json")


@pytest.mark.parametrize(("role", "endpoint", "status"), MATRIX)
def test_role_matrix(role, endpoint, status, client_for, db):
    response = call(client_for(make_user(f"{role}-person", role)), endpoint)

    assert response.status_code == status, response.json()
    if status == 403:
        assert response.json()["error"]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_no_credentials_is_401_with_an_error(endpoint, api, db):
    response = call(api, endpoint)

    assert response.status_code == 401
    assert response.json()["error"]


@pytest.mark.parametrize("token", ["not-a-real-token", "blz_not-a-real-key"])
def test_garbage_bearer_token_is_401(token, bearer, db):
    response = bearer(token).get("/api/me/")

    assert response.status_code == 401
    assert response.json()["error"]


def test_read_key_can_list_engines_but_not_create(operator_user, key_for, bearer):
    client = bearer(key_for(operator_user, ["read"])[1])

    assert client.get("/api/engines/").status_code == 200
    response = call(client, "create engine")
    assert response.status_code == 403
    assert "'manage'" in response.json()["error"]


def test_manage_key_implies_read(operator_user, key_for, bearer):
    client = bearer(key_for(operator_user, ["manage"])[1])

    assert client.get("/api/engines/").status_code == 200
    assert call(client, "create engine").status_code == 201


def test_inference_only_key_cannot_read_engines(operator_user, key_for, bearer):
    response = bearer(key_for(operator_user, ["inference"])[1]).get("/api/engines/")

    assert response.status_code == 403
    assert "'read'" in response.json()["error"]


def test_key_never_exceeds_its_owners_role(viewer_user, key_for, bearer):
    client = bearer(key_for(viewer_user, ["read", "manage"])[1])

    assert call(client, "create engine").status_code == 403
    assert client.get("/api/users/").status_code == 403
