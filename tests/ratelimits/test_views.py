"""/ratelimits/: operators see the policies with their usage and change them in the browser."""

import pytest

from accounts.models import AuditEvent
from ratelimits.models import RateLimitPolicy

FORM = {"name": "per-ip", "scope": "ip", "endpoint": "", "algorithm": "sliding_window", "limit": "100",
        "period_seconds": "60", "burst": "", "action": "reject", "max_delay": "0", "enabled": "on"}


@pytest.fixture
def operator(client, operator_user):
    client.force_login(operator_user)
    return client


def test_operator_sees_each_policy_with_its_current_usage(operator, make_policy, api):
    make_policy(name="per-ip", scope="ip", limit=5, endpoint="/api/")
    api.get("/api/me/", REMOTE_ADDR="10.1.2.3")
    page = operator.get("/ratelimits/").content.decode()
    assert "per-ip" in page and "ip:10.1.2.3" in page and "1/5 used" in page


def test_the_nav_links_to_the_page_for_operators_only(operator, client, viewer_user):
    assert 'href="/ratelimits/"' in operator.get("/keys/").content.decode()
    client.force_login(viewer_user)
    assert 'href="/ratelimits/"' not in client.get("/keys/").content.decode()


def test_operator_creates_a_policy_in_the_browser(operator):
    response = operator.post("/ratelimits/new/", FORM)
    assert response.status_code == 302
    assert RateLimitPolicy.objects.get(name="per-ip").limit == 100
    assert AuditEvent.objects.filter(action="ratelimit.create", actor="otto").exists()


def test_the_form_shows_what_is_wrong(operator):
    response = operator.post("/ratelimits/new/", {**FORM, "burst": "5"})
    assert response.status_code == 400
    assert "Only token_bucket and adaptive policies have a burst" in response.content.decode()
    assert not RateLimitPolicy.objects.exists()


def test_operator_edits_a_policy_and_only_the_change_is_audited(operator, make_policy):
    policy = make_policy(name="per-ip", scope="ip", algorithm="sliding_window", limit=100, period_seconds=60)
    assert operator.post(f"/ratelimits/{policy.pk}/", {**FORM, "limit": "50"}).status_code == 302
    assert AuditEvent.objects.get(action="ratelimit.update").changes == {"limit": [100, 50]}


def test_operator_disables_and_deletes_a_policy(operator, make_policy):
    policy = make_policy(endpoint="/v1/")
    operator.post(f"/ratelimits/{policy.pk}/toggle/")
    assert not RateLimitPolicy.objects.get(pk=policy.pk).enabled
    operator.post(f"/ratelimits/{policy.pk}/delete/")
    assert not RateLimitPolicy.objects.exists()
    assert list(AuditEvent.objects.filter(action__in=["ratelimit.disable", "ratelimit.delete"])
                .values_list("action", flat=True).order_by("pk")) == ["ratelimit.disable", "ratelimit.delete"]


def test_viewers_cannot_open_or_change_the_policies(client, viewer_user, make_policy):
    policy = make_policy(endpoint="/v1/")
    client.force_login(viewer_user)
    assert client.get("/ratelimits/").status_code == 403
    assert client.post("/ratelimits/new/", FORM).status_code == 403
    assert client.post(f"/ratelimits/{policy.pk}/delete/").status_code == 403
    assert RateLimitPolicy.objects.filter(pk=policy.pk).exists()
