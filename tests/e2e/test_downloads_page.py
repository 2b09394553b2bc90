"""Downloads on the Models page in a real browser: an operator asks a worker for a model from a loopback
Hugging Face hub (tests/hub.py), watches its progress move without reloading, sees it listed once whole,
cancels another and reads why a third failed; a viewer sees the downloads but no controls. No console
error or CSP refusal on the way."""

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.conftest import PASSWORD, make_user
from tests.e2e.conftest import page_problems
from tests.e2e.test_dashboard import screenshot
from tests.e2e.test_newcomer import sign_in, submit
from tests.e2e.test_page_walk import answer_dialog
from tests.hub import LoopbackHub
from tests.servers import start_worker

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def hub_and_worker(django_db_blocker, tmp_path, tiny_llm_path):
    """A loopback hub with acme/tiny-chat and acme/big-chat (the tiny LLM, twice), and a worker fetching from it."""
    hub = LoopbackHub()
    hub.add("acme/tiny-chat", tiny_llm_path)
    hub.add("acme/big-chat", tiny_llm_path)
    (tmp_path / "models").mkdir()
    try:
        with django_db_blocker.unblock():
            worker = start_worker(tmp_path, "dl-e2e", threads=2, HF_ENDPOINT=hub.endpoint,
                                  BLAZE_MODELS_DIR=str(tmp_path / "models"), BLAZE_CATALOG_SECONDS="30")
        try:
            yield hub, worker
        finally:
            worker.stop()
    finally:
        hub.stop()


def row_of(browser, repo):
    """The downloads table's row of `repo` once the page's script has made it (the template's are replaced)."""
    def found(driver):
        rows = [row for row in driver.find_elements(By.CSS_SELECTOR, "#downloads tr[data-live]") if repo in row.text]
        return rows[0] if rows else False
    return WebDriverWait(browser, 10).until(found)


def count(browser, css):
    """How many elements match `css` now (find_elements would wait the implicit wait for none)."""
    return browser.execute_script("return document.querySelectorAll(arguments[0]).length", css)


def ask(browser, repo, worker):
    browser.find_element(By.ID, "id_repo").send_keys(repo)
    Select(browser.find_element(By.ID, "id_worker")).select_by_visible_text(worker)
    submit(browser, "#download-form button")


def test_an_operator_downloads_a_model_watching_its_progress_and_cancels_another(live_blaze, browser,
                                                                                hub_and_worker):
    hub, worker = hub_and_worker
    operator = make_user("downloads-operator", "operator")
    browser.delete_all_cookies()
    sign_in(browser, live_blaze, operator.username, PASSWORD)
    page_problems(browser)
    browser.get(f"{live_blaze}/engines/models/")

    hub.pace = 200_000  # bytes a second: a few seconds for the tiny model, its progress visible meanwhile
    ask(browser, "acme/tiny-chat", worker.hostname)
    assert "Downloading acme/tiny-chat@main" in browser.page_source
    row = row_of(browser, "acme/tiny-chat")
    WebDriverWait(browser, 10).until(lambda _: "running" in row.text and "/s" in row.text and " of " in row.text)
    assert worker.hostname in row.text
    progress = row.find_element(By.TAG_NAME, "progress")
    WebDriverWait(browser, 10).until(lambda _: 0 < float(progress.get_attribute("value")) < float(
        progress.get_attribute("max")))
    screenshot(browser, "downloads-running")
    WebDriverWait(browser, 20).until(lambda _: "done" in row.text)
    assert progress.get_attribute("value") == progress.get_attribute("max")
    browser.refresh()
    [listed] = [r for r in browser.find_elements(By.CSS_SELECTOR, "#models tbody tr") if "tiny-chat" in r.text]
    assert worker.hostname in listed.text and "GPT2LMHeadModel" in listed.text

    hub.pace = 20_000  # slow enough to be cancelled midway
    ask(browser, "acme/big-chat", worker.hostname)
    row = row_of(browser, "acme/big-chat")
    WebDriverWait(browser, 10).until(lambda _: "running" in row.text)
    download_id = row.get_attribute("data-download")
    text = answer_dialog(browser, f"#downloads tr[data-download='{download_id}'] button", accept=True)
    assert text == "Cancel the download of acme/big-chat?"
    assert f"Cancelling the download of acme/big-chat: {worker.hostname} stops it at once." in browser.page_source
    WebDriverWait(browser, 10).until(lambda _: "cancelled" in row_of(browser, "acme/big-chat").text)

    hub.pace = None
    ask(browser, "acme/nothing", worker.hostname)
    WebDriverWait(browser, 10).until(lambda _: "failed" in row_of(browser, "acme/nothing").text)
    assert f"No repository acme/nothing on {hub.endpoint}" in row_of(browser, "acme/nothing").text
    assert count(browser, "#downloads tr[data-download] button") == 0  # all three are over: no Cancel
    screenshot(browser, "downloads-operator")
    assert page_problems(browser) == []

    viewer = make_user("downloads-viewer", "viewer")
    browser.delete_all_cookies()
    sign_in(browser, live_blaze, viewer.username, PASSWORD)
    page_problems(browser)
    browser.get(f"{live_blaze}/engines/models/")
    assert "done" in row_of(browser, "acme/tiny-chat").text
    assert count(browser, "#download-form") == count(browser, "#downloads form") == 0
    assert page_problems(browser) == []
