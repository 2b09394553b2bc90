"""Every page, as each role sees it, in a real browser under the Content-Security-Policy: no console
error, no CSP refusal, no failed request, no uncaught exception. The pages come from the URL conf
through the access-control table (tests/security/test_access_control.py), so a new page is walked
the day it is added. Then the controls that lean on scripts are used as a person would: a role
changed from its menu, two-factor ticked, and every Delete or Revoke asked first, once declined."""

import io
import time

import httpx
import pytest
from django.conf import settings
from django.test import Client
from PIL import Image
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select, WebDriverWait

from accounts import services as account_services
from accounts.audit import Actor
from accounts.models import ApiKey, RolePolicy, Team
from alerts.models import AlertRule
from engines import services
from engines.models import Engine, GeneratedImage, Route, RouteTarget
from ratelimits.models import RateLimitPolicy
from telemetry import request_log
from tests.conftest import PASSWORD, make_user
from tests.e2e.conftest import page_problems
from tests.e2e.test_dashboard import screenshot
from tests.e2e.test_newcomer import sign_in
from tests.security.test_access_control import ACCESS, ROLES, _path, url_patterns
from usage.models import Budget

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# What shows that a page's scripts did their work, beyond loading without an error (a JS expression).
RENDERED = {
    "api-docs": "document.querySelector('.swagger-ui .opblock')",  # Swagger UI drew the schema's operations
    "api-redoc": "document.querySelector('[data-section-id] h2')",  # ReDoc drew the schema's sections
    "playground": "document.getElementById('socket-state').textContent === 'ready'",  # its WebSocket is open
}
PLAYGROUND_MODES = ("chat", "compare", "embed", "images")


@pytest.fixture
def world(upstream, key_for):
    """One of everything a page can name ("acl", as the access-control test names them), a real
    request in the request log, and an image on the disk the server reads."""
    actor = Actor.system("test")
    engine = services.engine_create(actor=actor, name="acl", kind="llm", backend="remote", model="up",
                                    base_url=upstream.base_url("ok"))
    for kind in ("embedding", "diffusion"):  # so that every playground mode has a model and runs its script
        Engine.objects.create(name=f"acl-{kind}", kind=kind, model="/nowhere")
    route = services.route_create(actor=actor, name="acl")
    services.route_target_add(actor=actor, route=route, engine=engine)
    AlertRule.objects.create(name="acl", series="route_error_ratio", comparator=">", threshold=0.5,
                             annotations={"summary": "errors over half"})
    png = io.BytesIO()
    Image.new("RGB", (8, 8), "orange").save(png, format="PNG")
    (settings.MEDIA_ROOT / "images").mkdir(parents=True, exist_ok=True)
    (settings.MEDIA_ROOT / "images" / "page-walk.png").write_bytes(png.getvalue())
    image = GeneratedImage.objects.create(engine="acl", prompt="an orange square", seed=1, file="images/page-walk.png")
    owner = make_user("walk-owner", "admin")
    account_services.team_member_add(actor=actor, team=account_services.team_create(actor=actor, name="acl"),
                                     user=owner)
    budget = Budget.objects.create(name="acl", scope="user", target_id=owner.pk, metric="tokens", period="month",
                                   limit=100000, soft_limit=80000)
    pks = {"ratelimits": RateLimitPolicy.objects.create(name="acl", limit=1000).pk, "user": owner.pk,
           "image": image.pk, "budget": budget.pk}
    return {name: _path(name, text, pks) for name, text in url_patterns() if name in pages_of("admin")}


def pages_of(role):
    """URL names a signed-in user of `role` may GET in the browser (the table's rules without an API scope)."""
    names = []
    for name, rules in ACCESS.items():
        for rule in rules.split(" | "):
            method, who, *scope = rule.split(" ")
            if method == "GET" and not scope and (who == "anyone" or (who in ROLES and
                                                                       ROLES.index(role) >= ROLES.index(who))):
                names.append(name)
    return names


def served_request(base, key):
    """Send one chat completion and return its id once the request log shows it."""
    answer = httpx.post(f"{base}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, timeout=30,
                        json={"model": "acl", "messages": [{"role": "user", "content": "hi"}]})
    assert answer.status_code == 200, answer.text
    deadline = time.monotonic() + 10
    while not (entries := request_log.entries(engine="acl")):
        assert time.monotonic() < deadline, "the request never reached the request log"
        time.sleep(0.1)
    return entries[0]["id"]


def html_pages(user, world, request_id):
    """{url: URL name} of the HTML pages the user can open: the table's GETs less POST-only views and
    files (an image, the schema) and redirects, each playground mode apart."""
    client = Client()
    client.force_login(user)
    urls = {}
    for name in pages_of(user.role):
        url = world[name].replace("req-acl", request_id)
        response = client.get(url)
        # 302: the sign-in page sends a signed-in user on; 405: a POST-only view.
        assert response.status_code in (200, 302, 405), f"{url} ({name}) as {user.role}: {response.status_code}"
        if response.status_code == 200 and response["Content-Type"].startswith("text/html"):
            urls[url] = name
    if "/playground/" in urls:
        urls.update({f"/playground/?mode={mode}": "playground" for mode in PLAYGROUND_MODES})
    return urls


def visit(browser, base, url, name):
    """Open the page, let its scripts settle, and return what went wrong on it."""
    browser.get(base + url)
    WebDriverWait(browser, 10).until(lambda b: b.execute_script("return document.readyState") == "complete")
    if name in RENDERED:
        WebDriverWait(browser, 15).until(lambda b: b.execute_script(f"return !!({RENDERED[name]})"),
                                         f"{url} never rendered")
    time.sleep(0.5)  # a WebSocket opened, a fetch answered, a chart drawn
    return [f"{url}: {problem}" for problem in page_problems(browser)]


@pytest.mark.parametrize("role", ROLES)
def test_every_page_of_every_role_works_under_the_csp(role, live_blaze, browser, world, key_for):
    user = make_user(f"walk-{role}", role)
    request_id = served_request(live_blaze, key_for(user, scopes=["inference"])[1])
    pages = html_pages(user, world, request_id)
    assert "/engines/acl/" in pages and "/api/docs/" in pages and "/api/redoc/" in pages
    assert ("/users/" in pages) is ("/teams/acl/" in pages) is (role == "admin")
    assert ("/engines/new/" in pages) is (role != "viewer")

    browser.delete_all_cookies()
    sign_in(browser, live_blaze, user.username, PASSWORD)
    page_problems(browser)  # what earlier tests left in the console is theirs
    problems = []
    for url, name in pages.items():
        problems += visit(browser, live_blaze, url, name)
        if role == "admin":  # every page as the admin sees it, to look at (var/screenshots/walk-*.png)
            mode = url.partition("?mode=")[2]
            screenshot(browser, "-".join(filter(None, ("walk", name.replace(":", "-"), mode))))
    assert problems == [], "\n".join(problems)


def test_an_admin_changes_a_role_and_the_two_factor_policy_from_the_users_page(live_blaze, browser):
    make_user("ursula", "admin")
    vic = make_user("vic", "viewer")
    browser.delete_all_cookies()
    sign_in(browser, live_blaze, "ursula", PASSWORD)
    browser.get(f"{live_blaze}/users/")
    page = browser.find_element(By.TAG_NAME, "html")
    Select(browser.find_element(By.CSS_SELECTOR, "select[aria-label='Role of vic']")).select_by_value("operator")
    WebDriverWait(browser, 10).until(expected_conditions.staleness_of(page))
    assert "User vic updated." in browser.page_source
    vic.refresh_from_db()
    assert vic.role == "operator"

    page = browser.find_element(By.TAG_NAME, "html")
    browser.find_element(By.XPATH, "//label[b='operator']/input[@name='mfa_required']").click()
    WebDriverWait(browser, 10).until(expected_conditions.staleness_of(page))
    assert RolePolicy.objects.get(group__name="operator").mfa_required is True
    assert browser.find_element(By.XPATH, "//label[b='operator']/input[@name='mfa_required']").is_selected()
    assert page_problems(browser) == []


def answer_dialog(browser, button_css, accept):
    """Click a button whose form asks first; the dialog must appear. Returns its text."""
    page = browser.find_element(By.TAG_NAME, "html")
    browser.find_element(By.CSS_SELECTOR, button_css).click()
    dialog = WebDriverWait(browser, 5).until(expected_conditions.alert_is_present())
    text = dialog.text
    if accept:
        dialog.accept()
        # While the old document is torn down, Chromium may answer "does not belong to the document"
        # rather than "stale": ask again until it says stale.
        WebDriverWait(browser, 10, ignored_exceptions=[WebDriverException]).until(
            expected_conditions.staleness_of(page))
        WebDriverWait(browser, 10).until(lambda b: b.execute_script("return document.readyState") == "complete")
    else:
        dialog.dismiss()
    return text


def test_every_delete_and_revoke_asks_first_and_cancel_keeps_the_thing(live_blaze, browser, upstream):
    admin = make_user("delia", "admin")
    actor = Actor(user=admin)
    engine = services.engine_create(actor=actor, name="doomed", kind="llm", backend="remote",
                                    base_url=upstream.base_url("ok"))
    kept = services.engine_create(actor=actor, name="kept", kind="llm", backend="remote",
                                  base_url=upstream.base_url("ok"))
    route = services.route_create(actor=actor, name="doomed-route")
    services.route_target_add(actor=actor, route=route, engine=kept)
    policy = RateLimitPolicy.objects.create(name="doomed-policy", limit=100_000)
    key, _ = account_services.api_key_create(actor=actor, user=admin, name="doomed-key", scopes=["read"])
    team = account_services.team_create(actor=actor, name="doomed-team")
    browser.delete_all_cookies()
    sign_in(browser, live_blaze, "delia", PASSWORD)

    cases = [  # page, the button, the question asked, whether the thing is still there
        (f"/engines/{engine.name}/", "form[data-confirm^='Delete engine'] button", "Delete engine doomed?",
         lambda: Engine.objects.filter(pk=engine.pk).exists()),
        (f"/engines/routes/{route.name}/", "form[data-confirm^='Remove kept'] button", "Remove kept from route",
         lambda: RouteTarget.objects.filter(route=route).exists()),
        (f"/engines/routes/{route.name}/", "form[data-confirm^='Delete route'] button", "Delete route doomed-route?",
         lambda: Route.objects.filter(pk=route.pk).exists()),
        ("/ratelimits/", "form[data-confirm^='Delete policy'] button", "Delete policy doomed-policy?",
         lambda: RateLimitPolicy.objects.filter(pk=policy.pk).exists()),
        ("/keys/", "form[data-confirm^='Revoke doomed-key'] button", "Revoke doomed-key?",
         lambda: ApiKey.objects.get(pk=key.pk).revoked_at is None),
        ("/teams/", "form[data-confirm^='Delete team doomed-team'] button", "Delete team doomed-team?",
         lambda: Team.objects.filter(pk=team.pk).exists()),
    ]
    for url, button, question, still_there in cases:
        browser.get(live_blaze + url)
        assert question in answer_dialog(browser, button, accept=False)
        assert still_there(), f"{url}: dismissed, yet it acted"
        browser.get(live_blaze + url)
        answer_dialog(browser, button, accept=True)
        assert not still_there(), f"{url}: accepted, yet nothing happened"
    assert page_problems(browser) == []


@pytest.mark.parametrize("page", ["/api/docs/", "/api/redoc/"])
def test_the_api_docs_render_without_a_session(live_blaze, browser, page):
    browser.delete_all_cookies()
    page_problems(browser)
    assert visit(browser, live_blaze, page, "api-docs" if "docs" in page else "api-redoc") == []
    assert "Blaze API" in browser.find_element(By.TAG_NAME, "body").text

