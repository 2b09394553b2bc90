"""The Models page in a real browser: an operator sees what a worker can serve, Register opens the
engine form filled in, "Check on the workers" shows what the worker found before saving, and the
saved engine's page says it was checked; no console error or CSP refusal on the way."""

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from engines import catalog
from engines.models import Engine
from tests.conftest import PASSWORD, make_user
from tests.e2e.conftest import page_problems
from tests.e2e.test_dashboard import screenshot
from tests.e2e.test_newcomer import sign_in, submit
from tests.servers import start_worker, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def worker_with_a_model(django_db_blocker, tmp_path, tiny_llm_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny-chat").symlink_to(tiny_llm_path)
    with django_db_blocker.unblock():
        worker = start_worker(tmp_path, "models-e2e", threads=2, BLAZE_MODELS_DIR=str(tmp_path / "models"),
                              BLAZE_CATALOG_SECONDS="1")
    try:
        wait_for(lambda: any(row["path"].startswith(str(tmp_path)) for row in catalog.models()), 30,
                 "the worker's catalog", worker)
        yield tmp_path / "models" / "tiny-chat"
    finally:
        worker.stop()


def test_an_operator_registers_a_model_from_the_models_page_checked_by_the_worker(live_blaze, browser,
                                                                                  worker_with_a_model):
    operator = make_user("models-operator", "operator")
    browser.delete_all_cookies()
    sign_in(browser, live_blaze, operator.username, PASSWORD)
    page_problems(browser)
    browser.get(f"{live_blaze}/engines/models/")
    [row] = [row for row in browser.find_elements(By.CSS_SELECTOR, "#models tbody tr")
             if str(worker_with_a_model) in row.text]
    assert "GPT2LMHeadModel" in row.text and "models-e2e@test" in row.text
    screenshot(browser, "models-operator")
    row.find_element(By.LINK_TEXT, "Register").click()

    WebDriverWait(browser, 10).until(lambda b: b.find_elements(By.ID, "model-check"))
    assert browser.find_element(By.ID, "id_model").get_attribute("value") == str(worker_with_a_model)
    assert browser.find_element(By.ID, "id_name").get_attribute("value") == "tiny-chat"
    browser.find_element(By.ID, "model-check").click()
    findings = browser.find_element(By.ID, "model-findings")
    WebDriverWait(browser, 20).until(lambda b: "GPT2LMHeadModel" in findings.text)
    assert "models-e2e@test" in findings.text and "chat template" in findings.text
    screenshot(browser, "models-register-checked")

    submit(browser, "#engine-form button[type=submit]")
    assert "Engine tiny-chat registered, checked: GPT2LMHeadModel" in browser.page_source
    assert Engine.objects.get(name="tiny-chat").model == str(worker_with_a_model)
    assert page_problems(browser) == []
