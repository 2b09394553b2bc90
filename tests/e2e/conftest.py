"""Headless Chromium, driving the live server from tests/conftest.py."""

import os
import shutil

import pytest

CHROMIUM_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-dev-shm-usage",
    "--window-size=1280,900",
]

WATCH_PAGE = """
window.__problems = [];
document.addEventListener("securitypolicyviolation", (e) => window.__problems.push(
  `CSP refused ${e.violatedDirective}: ${e.blockedURI || "inline"} (${e.sourceFile}:${e.lineNumber})`));
window.addEventListener("error", (e) => window.__problems.push(`uncaught: ${e.message}`));
window.addEventListener("unhandledrejection",
  (e) => window.__problems.push(`unhandled rejection: ${e.reason}`));
"""


def page_problems(browser):
    """What went wrong on the page since the last call: console errors (failed requests included), CSP
    refusals, uncaught exceptions. Reading the console empties it."""
    console = [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    return console + (browser.execute_script("return window.__problems || []") or [])


@pytest.fixture(scope="session")
def browser():
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_path):
        if os.environ.get("CI"):
            pytest.fail("Chromium and chromedriver are required in CI (./blaze test installs them)")
        pytest.skip("Chromium is not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console, for page_problems()
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.implicitly_wait(5)
    driver.set_page_load_timeout(60)  # a page that takes longer has failed (the default waits 300 s)
    # Before any page script: CSP refusals, uncaught errors and rejected promises are kept for page_problems().
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": WATCH_PAGE})
    yield driver
    driver.quit()
