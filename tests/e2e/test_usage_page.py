"""The Usage page in a real browser: an admin sees everyone's usage charted and listed by name, a
viewer only their own, with no console error or CSP refusal; the export is a CSV of the same."""

import pytest
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import PASSWORD, make_user
from tests.e2e.conftest import page_problems
from tests.e2e.test_dashboard import screenshot
from tests.e2e.test_newcomer import sign_in
from tests.usage.test_persist import chat
from usage import persist

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def shown(browser, base, user):
    browser.delete_all_cookies()
    sign_in(browser, base, user.username, PASSWORD)
    page_problems(browser)  # what earlier pages left in the console is theirs
    browser.get(f"{base}/usage/?group_by=user&period=hour&days=1")
    WebDriverWait(browser, 15).until(
        lambda b: b.execute_script("const p = document.getElementById('usage-chart'); return p.data && p.data.length"))
    traces = browser.execute_script("return document.getElementById('usage-chart').data.map((t) => t.name)")
    rows = browser.execute_script(
        "return [...document.querySelectorAll('#usage-totals tbody tr')].map((r) => r.cells[0].innerText)")
    # This test's users only: a live feed may store other tests' events meanwhile (an admin sees them too).
    return ({name for name in traces if name.startswith("chart-")},
            [name for name in rows if name.startswith("chart-")])


def test_an_admin_sees_everyone_charted_and_a_viewer_only_themselves(live_blaze, browser):
    admin, viewer = make_user("chart-admin", "admin"), make_user("chart-viewer", "viewer")
    chat("chart-1", user_id=admin.pk, completion=30)
    chat("chart-2", user_id=viewer.pk, completion=5)
    chat("chart-3", user_id=viewer.pk, completion=7, engine="other")
    persist.drain()

    # The chart's series, and the table's rows most used first (the viewer's two requests are more tokens).
    assert shown(browser, live_blaze, admin) == ({"chart-admin", "chart-viewer"}, ["chart-viewer", "chart-admin"])
    screenshot(browser, "usage-admin")
    assert page_problems(browser) == []
    assert shown(browser, live_blaze, viewer) == ({"chart-viewer"}, ["chart-viewer"])
    assert page_problems(browser) == []
