"""The operator's dashboard in a real browser: signing in with a TOTP code lands on the overview, which
shows every component, follows the live feed over its WebSocket (charts get points, cache bars move
without a reload), keeps scripts to Blaze's own origin, and reconnects by itself after daphne restarts.
Screenshots of the main pages are saved under var/screenshots/ to look at."""

from pathlib import Path

import httpx
import pytest
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from accounts.audit import Actor
from alerts import services as alert_services
from engines import services
from engines.models import Engine
from tests.alerts.test_setup import Loopback
from tests.conftest import PASSWORD, make_user
from tests.e2e.test_newcomer import sign_in, submit
from tests.servers import start_daphne
from tests.upstream import OpenAIUpstream

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"


def screenshot(browser, name):
    """The whole page, as tall as it is."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    size = browser.get_window_size()
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(size["width"], min(height + 100, 4000))
    browser.save_screenshot(str(SCREENSHOTS / f"{name}.png"))
    browser.set_window_size(size["width"], size["height"])


def points(browser, chart_id):
    """The number of points the chart draws, all lines together (the markers' trace left out)."""
    return browser.execute_script(
        "const plot = document.getElementById(arguments[0]);"
        "if (!plot || !plot.data) return 0;"
        "return plot.data.filter(t => t.mode.startsWith('lines')).reduce((n, t) => n + t.x.length, 0);",
        chart_id)


def text_of(browser, css):
    return browser.find_element(By.CSS_SELECTOR, css).text


@pytest.fixture
def upstream():
    server = OpenAIUpstream()
    yield server
    server.stop()


def sign_in_with_totp(browser, base, user):
    device = TOTPDevice.objects.create(user=user, name="phone", confirmed=True)
    browser.get(f"{base}/login/")
    code = totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits, drift=device.drift)
    for name, value in (("username", user.username), ("password", PASSWORD), ("otp", f"{code:06d}")):
        browser.find_element(By.NAME, name).send_keys(value)
    submit(browser, "form button[type=submit]")


def test_an_operator_signs_in_with_totp_and_watches_traffic_arrive(live_blaze, live_feed, engine_worker, browser,
                                                                   upstream, key_for):
    operator = make_user("ollie", "operator")
    actor = Actor(user=operator)
    far = services.engine_create(actor=actor, name="far", kind="llm", backend="remote",
                                 base_url=upstream.base_url("ok"))
    route = services.route_create(actor=actor, name="chat")
    services.route_target_add(actor=actor, route=route, engine=far)
    browser.delete_all_cookies()
    sign_in_with_totp(browser, live_blaze, operator)
    assert browser.current_url.rstrip("/") == live_blaze  # the overview is the landing page
    wait = WebDriverWait(browser, 15)
    wait.until(lambda b: text_of(b, "[data-feed-state]").startswith("live"))
    wait.until(lambda b: engine_worker.hostname in text_of(b, "#workers-table"))
    assert "chat" in text_of(browser, "#routes-table") and "far" in text_of(browser, "#engines-table")
    assert text_of(browser, "#tile-routes") == "1 / 1"

    _, key = key_for(make_user("app", "viewer"), scopes=("inference",))
    before = points(browser, "chart-throughput")
    for _ in range(5):
        answer = httpx.post(f"{live_blaze}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                            json={"model": "chat", "messages": [{"role": "user", "content": "Hi"}]}, timeout=30)
        assert answer.status_code == 200
    wait.until(lambda b: points(b, "chart-throughput") > before + 1)  # new points, no reload
    assert browser.execute_script("return performance.getEntriesByType('navigation').length") == 1
    wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "figure[data-kind=histogram]").get_attribute("class")
               .endswith("has-data"))
    screenshot(browser, "overview")
    browser.get(f"{live_blaze}/requests/")
    assert "chat" in text_of(browser, "#requests") and "far" in text_of(browser, "#requests")
    screenshot(browser, "requests")


def test_a_rule_fires_on_the_overview_and_its_receiver_hears_it_fire_and_resolve(live_blaze, live_feed, browser,
                                                                                 upstream, key_for):
    actor = Actor(user=make_user("otis", "operator"))
    far = services.engine_create(actor=actor, name="far", kind="llm", backend="remote",
                                 base_url=upstream.base_url("ok"))
    services.route_target_add(actor=actor, route=services.route_create(actor=actor, name="chat"), engine=far)
    with Loopback() as receiver:
        alert_services.alert_receiver_create(actor=actor, name="on-call", url=receiver.url)
        # Only this route: the live processes are the session's, and another test's route may still have
        # latency in the window (its alert would join this one's notification).
        alert_services.alert_rule_create(actor=actor, name="chat-latency", series="route_latency_p95_seconds",
                                         matchers={"route": "chat"},
                                         comparator=">", threshold=0, for_seconds=0, severity="warning",
                                         annotations={"summary": "Route {{ $labels.route }} answers slowly"})
        browser.delete_all_cookies()
        sign_in(browser, live_blaze, "otis", PASSWORD)
        _, key = key_for(make_user("app", "viewer"), scopes=("inference",))

        def firing_on_the_overview(b):
            # Traffic until the page shows the alert: one request stays in the 3 s window only that long,
            # and a loaded machine can take longer to draw it.
            httpx.post(f"{live_blaze}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                       json={"model": "chat", "messages": [{"role": "user", "content": "Hi"}]}, timeout=30)
            return "chat-latency" in text_of(b, "#alerts-table") and text_of(b, "#tile-alerts") == "1"

        wait = WebDriverWait(browser, 30)
        wait.until(firing_on_the_overview)
        screenshot(browser, "overview-alert")
        wait.until(lambda b: any(p["status"] == "firing" for p in receiver.received))
        wait.until(lambda b: any(p["status"] == "resolved" for p in receiver.received))  # the traffic's window passed
    firing = next(p for p in receiver.received if p["status"] == "firing")
    assert firing["version"] == "4" and firing["receiver"] == "on-call"
    assert firing["commonLabels"] == {"alertname": "chat-latency", "route": "chat", "severity": "warning"}
    [alert] = firing["alerts"]
    assert alert["status"] == "firing" and alert["endsAt"] == "0001-01-01T00:00:00Z" and alert["fingerprint"]
    assert alert["annotations"]["summary"] == "Route chat answers slowly"
    resolved = next(p for p in receiver.received if p["status"] == "resolved")
    [ended] = resolved["alerts"]
    assert ended["fingerprint"] == alert["fingerprint"] and ended["endsAt"] > alert["startsAt"]
    browser.get(f"{live_blaze}/alerts/")
    screenshot(browser, "alerts")


def test_the_cache_bar_follows_a_load_and_an_eviction(live_blaze, live_feed, engine_worker, browser, tiny_llm_path):
    operator = make_user("otto", "operator")
    tiny = Engine.objects.create(name="tiny-cache", kind="llm", model=tiny_llm_path, config={"max_new_tokens": 4})
    browser.delete_all_cookies()
    sign_in(browser, live_blaze, "otto", PASSWORD)
    wait = WebDriverWait(browser, 20)
    wait.until(lambda b: engine_worker.hostname in text_of(b, "#workers-table"))
    services.cache_load(actor=Actor(user=operator), worker_id=engine_worker.hostname, engine=tiny)
    wait.until(lambda b: "tiny-cache" in text_of(b, "#workers-table"))
    cache_chart = "figure[data-kind=cache]"
    wait.until(lambda b: "has-data" in b.find_element(By.CSS_SELECTOR, cache_chart).get_attribute("class"))
    screenshot(browser, "overview-cache")
    browser.get(f"{live_blaze}/engines/workers/")
    live_cache = f'[data-worker="{engine_worker.hostname}"] [data-live-cache]'
    wait.until(lambda b: "tiny-cache" in text_of(b, live_cache))
    screenshot(browser, "workers")
    services.cache_evict(actor=Actor(user=operator), worker_id=engine_worker.hostname)
    wait.until(lambda b: "tiny-cache" not in text_of(b, live_cache) and "no model loaded" in text_of(b, live_cache))


def test_the_overview_shows_each_loaded_llm_s_prefix_cache_hits(live_blaze, live_feed, engine_worker, browser,
                                                                tiny_llm_path, key_for):
    Engine.objects.create(name="tiny-prefix-view", kind="llm", model=tiny_llm_path, config={"max_new_tokens": 4})
    make_user("pia", "viewer")
    browser.delete_all_cookies()
    sign_in(browser, live_blaze, "pia", PASSWORD)
    _, key = key_for(make_user("app", "viewer"), scopes=("inference",))
    system = " ".join(["the quick red cat sat on the blue mat under the table."] * 10)
    body = {"model": "tiny-prefix-view", "max_tokens": 4, "temperature": 0,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": "hi"}]}
    for _ in range(2):  # the same long prompt twice: the second starts from the first's kept prefix
        answer = httpx.post(f"{live_blaze}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                            json=body, timeout=60)
        assert answer.status_code == 200
    row = f'#prefix-cache-table tr[data-engine="tiny-prefix-view"][data-worker="{engine_worker.hostname}"]'

    def cells(b):  # read at once: each snapshot redraws the table
        return b.execute_script("const row = document.querySelector(arguments[0]);"
                                "return row ? [...row.cells].map((cell) => cell.innerText) : [];", row)

    WebDriverWait(browser, 20).until(lambda b: (cells(b) or ["", "", ""])[2].startswith("1 of 2"))
    hits, saved, held = cells(browser)[2:5]
    cached = answer.json()["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert hits.startswith("1 of 2") and int(saved) == cached > 0  # prompt tokens saved
    assert " of " in held and "prefix" in held  # bytes held against the budget
    screenshot(browser, "overview-prefix-cache")


def test_pages_run_only_blaze_s_own_scripts(live_blaze, live_feed, browser):
    make_user("vic", "viewer")
    injected = "</script><script>window.__injected = 1</script><img src=x onerror=window.__injected=2>"
    Engine.objects.create(name="sneaky", kind="llm", model="m", status="failed", status_detail=injected)
    browser.delete_all_cookies()
    sign_in(browser, live_blaze, "vic", PASSWORD)
    WebDriverWait(browser, 15).until(lambda b: "sneaky" in text_of(b, "#engines-table"))
    # The data is drawn as text, and an inline script, even one added to the page, does not run.
    browser.execute_script("const s = document.createElement('script'); s.textContent = 'window.__inline = 1';"
                           "document.body.appendChild(s);")
    assert browser.execute_script("return [window.__injected, window.__inline]") == [None, None]
    assert browser.execute_script("return typeof Plotly") == "object"  # served from our own origin
    for path in ("/", "/engines/", "/engines/workers/", "/engines/routes/"):
        response = httpx.get(f"{live_blaze}{path}", cookies={c["name"]: c["value"] for c in browser.get_cookies()})
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]


def test_the_overview_reconnects_by_itself_after_daphne_restarts(live_feed, browser, tmp_path):
    make_user("rita", "viewer")
    own = start_daphne(tmp_path)
    port = int(own.url.rsplit(":", 1)[1])
    try:
        browser.delete_all_cookies()
        sign_in(browser, own.url, "rita", PASSWORD)
        wait = WebDriverWait(browser, 40)
        wait.until(lambda b: text_of(b, "[data-feed-state]").startswith("live"))
        own.stop()
        wait.until(lambda b: text_of(b, "[data-feed-state]").startswith("reconnecting"))
        own = start_daphne(tmp_path, port=port)
        wait.until(lambda b: text_of(b, "[data-feed-state]").startswith("live ·"))
    finally:
        own.stop()
    screenshot(browser, "overview-reconnected")
