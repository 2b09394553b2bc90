"""What a newcomer does first, in a real browser against daphne."""

import pytest
from django.core.management import call_command
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from engines.demo.build import smollm2_gguf
from engines.models import Engine

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def submit(browser, css):
    """Click a submit button and wait for the next page to replace this one."""
    page = browser.find_element(By.TAG_NAME, "html")
    browser.find_element(By.CSS_SELECTOR, css).click()

    def replaced(driver):
        try:
            page.is_enabled()
            return False
        except WebDriverException:  # stale, or chromedriver's "node does not belong to the document"
            return True

    WebDriverWait(browser, 10).until(replaced)


def sign_in(browser, base, username, password):
    browser.get(f"{base}/login/")
    browser.find_element(By.NAME, "username").send_keys(username)
    browser.find_element(By.NAME, "password").send_keys(password)
    submit(browser, "form button[type=submit]")


def test_admin_signs_in_and_sees_the_demo_engine(live_blaze, browser, monkeypatch):
    monkeypatch.setenv("BLAZE_ADMIN_PASSWORD", "newcomer-pass-1")
    call_command("setup_demo")
    browser.delete_all_cookies()
    sign_in(browser, live_blaze, "admin", "wrong-password")
    assert "Username or password is incorrect" in browser.page_source

    sign_in(browser, live_blaze, "admin", "newcomer-pass-1")
    assert browser.current_url.rstrip("/") == live_blaze  # the overview is the landing page
    browser.get(f"{live_blaze}/engines/")
    rows = browser.find_elements(By.CSS_SELECTOR, "#engines tbody tr")
    assert any("minilm" in row.text and "Embedding" in row.text for row in rows)

    # The demo LLM is the wheel's GGUF on llama.cpp, beside the same model on transformers, and the
    # playground's compare mode opens with the two side by side.
    if smollm2_gguf() is not None:
        assert Engine.objects.get(name="smollm2").config["runtime"] == "llama.cpp"
        assert Engine.objects.get(name="smollm2-hf").config["runtime"] == "transformers"
        browser.get(f"{live_blaze}/playground/?mode=compare")
        checked = browser.find_elements(By.CSS_SELECTOR, "input[name=compare]:checked")
        assert [box.get_attribute("value") for box in checked] == ["smollm2", "smollm2-hf"]


def test_operator_registers_an_engine_and_it_is_audited(live_blaze, browser, tiny_llm_path):
    from tests.conftest import PASSWORD, make_user

    make_user("olive", "operator")
    make_user("audra", "admin")
    browser.delete_all_cookies()
    sign_in(browser, live_blaze, "olive", PASSWORD)
    browser.get(f"{live_blaze}/engines/new/")
    browser.find_element(By.NAME, "name").send_keys("tiny-chat")
    Select(browser.find_element(By.NAME, "kind")).select_by_value("llm")
    browser.find_element(By.NAME, "model").send_keys(tiny_llm_path)  # a model, should a worker check it
    batch = browser.find_element(By.ID, "cfg-llm-max_batch_size")
    batch.clear()
    batch.send_keys("0")
    submit(browser, "#engine-form button[type=submit]")
    assert "Ensure this value is greater than or equal to 1." in browser.page_source

    batch = browser.find_element(By.ID, "cfg-llm-max_batch_size")
    batch.clear()
    batch.send_keys("16")
    submit(browser, "#engine-form button[type=submit]")
    assert browser.current_url.endswith("/engines/tiny-chat/")
    assert "max_batch_size" in browser.page_source and "16" in browser.page_source

    browser.delete_all_cookies()
    sign_in(browser, live_blaze, "audra", PASSWORD)
    browser.get(f"{live_blaze}/audit/?action=engine")
    row = browser.find_element(By.CSS_SELECTOR, "table tbody tr")
    assert "olive" in row.text and "engine.create" in row.text and "tiny-chat" in row.text
