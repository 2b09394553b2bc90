"""Every page sends a Content-Security-Policy that lets scripts come from Blaze's own origin only."""

import re
from pathlib import Path

import pytest
from django.conf import settings
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


def test_no_template_carries_an_inline_event_handler():
    """The policy refuses onclick=, onsubmit=…: such a control would silently do nothing."""
    templates = Path(settings.BASE_DIR, "templates")
    handlers = [f"{path.relative_to(templates)}: {match[0]}" for path in templates.rglob("*.html")
                for match in re.finditer(r"\son[a-z]+\s*=", path.read_text())]
    assert handlers == []


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/docs/", "/api/redoc/"])
def test_the_api_docs_need_no_inline_script_and_nothing_from_another_origin(path):
    page = Client().get(path)
    assert page.status_code == 200
    html = page.content.decode()
    assert "<script>" not in html
    assert re.findall(r"""(?:src|href)=["']?(?:https?:)?//""", html) == []  # fonts, bundles: all from here
    scripts = re.findall(r'<script src="([^"]+)"', html)
    assert scripts and all(Client().get(src).status_code == 200 for src in scripts)


@pytest.mark.django_db
def test_the_redoc_bundle_asks_no_cdn_for_its_logo():
    bundle = Client().get("/api/redoc/redoc.standalone.js").content
    assert b"Redoc" in bundle and b"cdn.redoc.ly" not in bundle
