"""The playground's answer stats link to the answer's trace (a traced daphne and worker of this module's
own, `traced_blaze`: while they run, a request may land on the traced worker). Screenshot under
var/screenshots/."""

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from engines.models import Engine
from tests.conftest import make_user
from tests.e2e.test_dashboard import screenshot
from tests.e2e.test_playground import ask, last_answer, open_playground
from tests.otlp import TRACE_URL
from tests.upstream import OpenAIUpstream

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_an_answer_s_stats_link_to_its_trace(traced_blaze, otlp_collector, browser):
    web, _ = traced_blaze
    make_user("tess", "viewer")
    upstream = OpenAIUpstream()
    try:
        Engine.objects.create(name="far-traced", kind="llm", backend="remote", base_url=upstream.base_url("ok"))
        open_playground(browser, web.url, "tess", "far-traced")
        ask(browser, "Hello?")
        WebDriverWait(browser, 30).until(lambda b: last_answer(b).find_elements(By.CSS_SELECTOR, ".stats .trace a"))
    finally:
        upstream.stop()
    link = last_answer(browser).find_element(By.CSS_SELECTOR, ".stats .trace a")
    trace_id = link.get_attribute("title")
    assert link.text == f"trace {trace_id[:12]}…" and link.get_attribute("href") == TRACE_URL.format(trace_id=trace_id)
    spans = otlp_collector.trace(trace_id, until=lambda spans: any(span.parent_id == "" for span in spans))
    [root] = [span for span in spans if span.parent_id == ""]
    assert root.name == "playground chat" and root.kind == "server" and root.attributes["blaze.user"] == "tess"
    screenshot(browser, "playground-trace")
