"""/security/status in the browser: admins see events and blocks, and block and unblock there."""

import pytest

from accounts.audit import Actor
from accounts.models import AuditEvent
from security import services
from security.models import IpBlock


@pytest.fixture
def admin_page(client, admin_user):
    client.force_login(admin_user)
    return client


def test_page_shows_events_counts_and_blocks(admin_page, client_at):
    client_at("203.0.113.70").get("/login/", {"next": "../../etc/passwd"})
    services.ip_block(actor=Actor.system("test"), network="198.51.100.40", reason="port scan")

    page = admin_page.get("/security/status").content.decode()
    assert "security.path_traversal" in page and "203.0.113.70" in page
    assert "path_traversal: 1" in page
    assert "198.51.100.40" in page and "port scan" in page


def test_detections_show_in_the_audit_log(admin_page, client_at):
    client_at("203.0.113.71").get("/login/", {"q": "1 UNION SELECT password FROM users"})

    page = admin_page.get("/audit/", {"action": "security"}).content.decode()
    assert "security.sql_injection" in page and "203.0.113.71" in page


def test_admin_blocks_and_unblocks_in_the_browser(admin_page):
    response = admin_page.post("/security/blocks",
                               {"network": "198.51.100.41", "reason": "abuse", "expires_in_hours": "2"})
    assert response.status_code == 302
    block = IpBlock.objects.get(network="198.51.100.41")
    assert block.expires_at is not None

    admin_page.post(f"/security/blocks/{block.pk}/unblock")

    assert not IpBlock.objects.exists()
    assert list(AuditEvent.objects.order_by("id").values_list("action", flat=True)) == [
        "security.ip_blocked", "security.ip_unblocked",
    ]


def test_form_errors_are_shown_on_the_page(admin_page):
    response = admin_page.post("/security/blocks", {"network": "999.1.1.1", "reason": "x"})

    assert response.status_code == 400
    assert "Enter an IP address" in response.content.decode()


def test_nav_links_the_page_for_admins_only(admin_page, client, viewer_user):
    assert 'href="/security/status"' in admin_page.get("/keys/").content.decode()
    client.force_login(viewer_user)
    assert 'href="/security/status"' not in client.get("/keys/").content.decode()


def test_non_admin_gets_403_and_visitor_the_login_page(client, operator_user):
    assert client.get("/security/status").status_code == 302
    assert client.get("/security/status")["Location"].startswith("/login/")
    client.force_login(operator_user)
    assert client.get("/security/status").status_code == 403
    assert client.post("/security/blocks", {"network": "198.51.100.1", "reason": "r"}).status_code == 403
