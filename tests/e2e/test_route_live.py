"""The route page's live table, in a real browser: numbers change on screen as traffic moves, without
a reload."""

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from engines.models import Engine, Route, RouteTarget
from engines.serving.resilience.breaker import CircuitBreaker
from engines.serving.router import state
from tests.e2e.test_newcomer import sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def cell(browser, target, field):
    return browser.find_element(By.CSS_SELECTOR, f'tr[data-target="{target}"] [data-field="{field}"]').text


def test_the_route_page_shows_breaker_and_traffic_as_they_change(live_blaze, live_feed, browser):
    from tests.conftest import PASSWORD, make_user

    make_user("opal", "operator")
    route = Route.objects.create(name="chat")
    far = Engine.objects.create(name="far", kind="llm", backend="remote", base_url="https://llm.example.com/v1")
    target = RouteTarget.objects.create(route=route, engine=far).pk
    browser.delete_all_cookies()
    sign_in(browser, live_blaze, "opal", PASSWORD)
    browser.get(f"{live_blaze}/engines/routes/chat/")
    wait = WebDriverWait(browser, 10)
    wait.until(lambda b: cell(b, target, "breaker") == "closed" and cell(b, target, "in_flight") == "0")

    lease = state.acquire(target)  # a request arrives …
    wait.until(lambda b: cell(b, target, "in_flight") == "1")
    state.release(target, 0.25, True, lease=lease)  # … and ends in 250 ms
    wait.until(lambda b: cell(b, target, "in_flight") == "0" and cell(b, target, "p50") == "250 ms")
    assert cell(browser, target, "share") == "100%"

    breaker = CircuitBreaker("far", failure_threshold=1)
    breaker.record_failure()  # the host fails: the breaker opens and the router skips the target
    wait.until(lambda b: cell(b, target, "breaker") == "open"
               and cell(b, target, "available") == "circuit breaker open")
