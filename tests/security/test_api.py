"""The block list and the security status over the API: admins only, every change audited."""

import pytest

from accounts.models import AuditEvent


@pytest.fixture
def admin(admin_user, client_for):
    return client_for(admin_user)


def test_admin_blocks_and_unblocks_a_network(admin, client_at):
    created = admin.post("/api/security/blocks/", {"network": "198.51.100.0/24", "reason": "scanner"}, format="json")
    assert created.status_code == 201
    assert client_at("198.51.100.20").get("/login/").status_code == 403

    assert admin.delete(f"/api/security/blocks/{created.json()['id']}/").status_code == 204
    assert client_at("198.51.100.20").get("/login/").status_code == 200


def test_block_and_unblock_are_audited_with_the_admin(admin, admin_user):
    created = admin.post("/api/security/blocks/", {"network": "198.51.100.21", "reason": "scanner"}, format="json")
    admin.delete(f"/api/security/blocks/{created.json()['id']}/")

    events = AuditEvent.objects.filter(action__startswith="security.").order_by("id")
    assert [(e.action, e.actor, e.target) for e in events] == [
        ("security.ip_blocked", admin_user.username, "198.51.100.21"),
        ("security.ip_unblocked", admin_user.username, "198.51.100.21"),
    ]
    assert events[0].changes["reason"] == [None, "scanner"]


def test_block_list_shows_active_blocks_normalised(admin):
    admin.post("/api/security/blocks/", {"network": "198.51.100.77/24", "reason": "r"}, format="json")
    expiring = {"network": "198.51.101.1", "reason": "r", "expires_at": "2100-01-01T00:00:00Z"}
    admin.post("/api/security/blocks/", expiring, format="json")

    rows = admin.get("/api/security/blocks/").json()["results"]
    assert {(row["network"], row["expires_at"]) for row in rows} == {
        ("198.51.100.0/24", None), ("198.51.101.1", "2100-01-01T00:00:00Z"),
    }


def test_bad_network_is_refused_saying_what_to_enter(admin):
    response = admin.post("/api/security/blocks/", {"network": "not-an-ip", "reason": "r"}, format="json")

    assert response.status_code == 400
    assert "CIDR" in response.json()["fields"]["network"][0]


def test_admin_cannot_block_their_own_address(admin, settings):
    settings.BLAZE_BLOCK_EXEMPT_IPS = []  # loopback, the test client's address, is exempt by default
    response = admin.post("/api/security/blocks/", {"network": "127.0.0.0/8", "reason": "oops"}, format="json")

    assert response.status_code == 400
    assert "lock you out" in response.json()["error"]


def test_status_counts_events_by_kind_and_lists_blocks(admin, client_at):
    client_at("203.0.113.60").get("/login/", {"q": "<script>alert(1)</script>"})
    admin.post("/api/security/blocks/", {"network": "198.51.100.30", "reason": "r"}, format="json")

    status = admin.get("/api/security/status/").json()
    assert status["counts"] == {"xss": 1, "ip_blocked": 1}
    assert [block["network"] for block in status["blocks"]] == ["198.51.100.30"]
    assert [event["action"] for event in status["events"]] == ["security.ip_blocked", "security.xss"]


@pytest.mark.parametrize("method, path", [
    ("get", "/api/security/status/"), ("get", "/api/security/blocks/"), ("post", "/api/security/blocks/"),
])
def test_non_admins_are_refused(method, path, operator_user, client_for, api):
    assert getattr(client_for(operator_user), method)(
        path, {"network": "198.51.100.1", "reason": "r"}
    ).status_code == 403
    assert getattr(api, method)(path).status_code in (401, 403)
