"""Every page sends a Content-Security-Policy that lets scripts come from Blaze's own origin only."""

import pytest
from django.test import Client

from tests.conftest import make_user

PAGES = ["/", "/requests/", "/alerts/", "/engines/", "/engines/new/", "/engines/workers/", "/engines/routes/",
         "/keys/", "/account/", "/audit/", "/users/", "/ratelimits/", "/security/status", "/login/"]


@pytest.mark.django_db
@pytest.mark.parametrize("path", PAGES)
def test_the_page_allows_scripts_from_its_own_origin_only(path):
    client = Client()
    if path != "/login/":
        client.force_login(make_user("ada", "admin"))
    response = client.get(path)
    assert response.status_code == 200, path
    directives = dict(part.strip().split(" ", 1) for part in response["Content-Security-Policy"].split(";"))
    assert directives["script-src"] == "'self'" and directives["object-src"] == "'none'"
    assert "<script>" not in response.content.decode()  # no inline script for the policy to block
