"""One dashboard for many hosts, in a real browser: three simulated hosts (tests/cluster_hosts.py), each
with its own worker and engine, two daphnes and one live feed; under traffic, the overview drawn by one
daphne shows every host's worker (CPU, memory, model cache) and every engine's tokens per second, with
no console error or CSP refusal, and /metrics/prometheus has series of each host."""

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.authtoken.models import Token
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.support.ui import WebDriverWait

from engines.models import Engine
from tests.cluster_hosts import HOSTS, Cluster, load_each_host_s_engine, start_three_hosts, steady_traffic
from tests.conftest import PASSWORD, make_user
from tests.e2e.conftest import page_problems
from tests.e2e.test_dashboard import screenshot
from tests.e2e.test_newcomer import sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def rows(browser, table):
    """Each row of the table as its cells' text, read at once (each snapshot redraws the table)."""
    return browser.execute_script(
        "return [...document.querySelectorAll(arguments[0] + ' tbody tr')]"
        ".map((row) => [...row.cells].map((cell) => cell.innerText));", table)


def tokens_per_second(text):
    return float(text) if text.replace(".", "", 1).isdigit() else 0.0


def every_host_shown(browser):
    """Each host's worker live with its CPU, memory and engine in cache, and each engine generating."""
    workers = {cells[0].split("\n")[0]: cells for cells in rows(browser, "#workers-table") if len(cells) == 5}
    engines = {cells[0]: cells for cells in rows(browser, "#engines-table") if len(cells) == 7}
    for host in HOSTS:
        _, state, cpu, memory, cache = workers.get(f"{host}@test", [""] * 5)
        if not (state == "live" and cpu.endswith("%") and cpu[:-1].isdigit() and memory[:1].isdigit()
                and f"tiny-{host} (" in cache):
            return False
        if tokens_per_second(engines.get(f"tiny-{host}", [""] * 7)[3]) <= 0:
            return False
    return True


def test_the_overview_shows_every_host_s_worker_and_engine(tmp_path, tiny_llm_path, browser, key_for):
    for host in HOSTS:
        Engine.objects.create(name=f"tiny-{host}", kind="llm", model=tiny_llm_path, config={"max_new_tokens": 32})
    make_user("otto", "operator")
    token = Token.objects.create(user=make_user("ops", "operator")).key
    _, key = key_for(make_user("app", "viewer"), scopes=("inference",))
    with Cluster(tmp_path) as hosts:
        web_a, web_b = start_three_hosts(hosts, BLAZE_FEED_WINDOW_SECONDS="5")
        load_each_host_s_engine(web_a.url, token)
        browser.delete_all_cookies()
        page_problems(browser)  # what earlier tests left in the console is theirs
        sign_in(browser, web_a.url, "otto", PASSWORD)  # before the traffic: page loads need the cores too
        # The traffic through one daphne, the page from the other; paced, so that the browser, five Blaze
        # processes and the models share two cores without the page's scripts starving.
        with steady_traffic(web_b.url, key, pause=0.5) as outcomes:
            WebDriverWait(browser, 60, poll_frequency=1, ignored_exceptions=(TimeoutException,)).until(
                every_host_shown)
        # Once the traffic stops: under it, on two cores, the page's main thread can be starved for longer
        # than a WebDriver script may take (a CI run timed out on the screenshot's scrollHeight).
        screenshot(browser, "overview-cluster")
        problems = page_problems(browser)
        scraped = httpx.get(f"{web_a.url}/metrics/prometheus", timeout=30)
    assert problems == []
    assert outcomes and set(outcomes) == {"answered"}
    assert scraped.status_code == 200
    samples = [sample for family in text_string_to_metric_families(scraped.text) for sample in family.samples]
    assert {sample.labels.get("host") for sample in samples} >= set(HOSTS)
    # Each host's tokens, counted by its worker and pushed through Redis (no directory is shared).
    assert {(sample.labels["host"], sample.labels["engine"]) for sample in samples
            if sample.name == "blaze_tokens_generated_total"} == {(host, f"tiny-{host}") for host in HOSTS}
