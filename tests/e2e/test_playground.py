"""The playground's chat in a real browser: an answer streams in pieces with its stats, Stop ends a long
generation in the worker, a model's markup is shown as text and runs nothing, a JSON-schema answer shows
parsed, and a viewer may use it but not the admin pages. Screenshots under var/screenshots/."""

import json
import os
import re
import subprocess
import sys
import time

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from engines.heartbeats import worker_info
from engines.models import Engine
from tests.conftest import PASSWORD, make_user
from tests.e2e.test_dashboard import screenshot, text_of
from tests.e2e.test_newcomer import sign_in
from tests.upstream import OpenAIUpstream

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# Counts how often the answer's text changes on screen, from before the question is sent.
COUNT_UPDATES = """
window.__updates = 0;
window.__said = [];
new MutationObserver(() => {
  window.__updates += 1;
  for (const stats of document.querySelectorAll("#turns .stats")) window.__said.push(stats.textContent);
}).observe(document.getElementById("turns"), {subtree: true, childList: true, characterData: true});
"""


def open_playground(browser, base, username, model=None, mode="chat"):
    browser.delete_all_cookies()
    sign_in(browser, base, username, PASSWORD)
    browser.get(f"{base}/playground/?mode={mode}")
    WebDriverWait(browser, 15).until(lambda b: text_of(b, "#socket-state") == "ready")
    if model is not None:
        Select(browser.find_element(By.ID, "pg-model")).select_by_value(model)


def ask(browser, text, max_tokens=None):
    if max_tokens is not None:
        field = browser.find_element(By.ID, "pg-max-tokens")
        field.clear()
        field.send_keys(str(max_tokens))
    browser.find_element(By.ID, "pg-prompt").send_keys(text)
    browser.find_element(By.ID, "pg-send").click()


def last_answer(browser):
    return browser.find_elements(By.CSS_SELECTOR, ".turn.assistant")[-1]


def open_code(browser):
    """Open the "Copy as code" panel and wait for its code: the panel fills on its toggle event,
    which the browser dispatches after the click returns."""
    browser.find_element(By.CSS_SELECTOR, "#pg-code summary").click()
    WebDriverWait(browser, 10).until(lambda b: text_of(b, "#pg-python"))


def run_copied(python, key, cwd):
    """The "Copy as code" Python, run as its reader would: with their key in BLAZE_KEY. Its output."""
    done = subprocess.run([sys.executable, "-c", python], env={**os.environ, "BLAZE_KEY": key}, cwd=cwd,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_viewer_s_answer_streams_in_pieces_and_its_stats_show(live_blaze, engine_worker, browser, tiny_llm_path,
                                                                key_for, tmp_path):
    vera = make_user("vera", "viewer")
    Engine.objects.create(name="tiny-chat", kind="llm", model=tiny_llm_path, config={"max_new_tokens": 64})
    open_playground(browser, live_blaze, "vera", "tiny-chat")
    browser.execute_script(COUNT_UPDATES)
    ask(browser, "the cat sat", max_tokens=40)
    wait = WebDriverWait(browser, 60)
    wait.until(lambda b: "tok/s" in last_answer(b).find_element(By.CLASS_NAME, "stats").text)
    stats = last_answer(browser).find_element(By.CLASS_NAME, "stats").text
    assert "first token" in stats and f"served by tiny-chat on {engine_worker.hostname}" in stats
    assert last_answer(browser).find_element(By.CLASS_NAME, "text").text  # some text arrived
    assert browser.execute_script("return window.__updates") > 3  # in pieces, not at once
    # tiny-chat was loaded by no worker: the answer said so while it waited.
    said = browser.execute_script("return window.__said")
    assert f"loading tiny-chat on {engine_worker.hostname}, " in " | ".join(said), said
    open_code(browser)
    curl, python = text_of(browser, "#pg-curl"), text_of(browser, "#pg-python")
    assert '"model":"tiny-chat"' in curl and "Bearer $BLAZE_KEY" in curl and "the cat sat" in curl
    assert 'OpenAI(base_url="' in python and 'os.environ["BLAZE_KEY"]' in python and "blz_" not in python + curl
    _, raw = key_for(vera, scopes=("inference",))
    assert run_copied(python, raw, tmp_path).strip()  # the copied code asks /v1 the same and gets an answer
    screenshot(browser, "playground")
    browser.get(f"{live_blaze}/users/")  # an admin page: a viewer is refused
    assert browser.title.startswith("Not allowed")


def test_a_json_schema_answer_shows_pretty_printed_and_valid(live_blaze, engine_worker, browser, tiny_llm_path):
    make_user("jay", "viewer")
    Engine.objects.create(name="tiny-json", kind="llm", model=tiny_llm_path, config={"max_new_tokens": 128})
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 8}, "n": {"type": "integer"}},
              "required": ["name", "n"], "additionalProperties": False}
    open_playground(browser, live_blaze, "jay", "tiny-json")
    Select(browser.find_element(By.ID, "pg-format")).select_by_value("json_schema")
    box = browser.find_element(By.ID, "pg-schema")
    box.send_keys('{"type": "object",')  # not JSON yet: refused inline, nothing sent
    ask(browser, "Who are you?", max_tokens=120)
    assert text_of(browser, "#pg-schema-error").startswith("JSON schema is not valid JSON")
    assert browser.find_elements(By.CSS_SELECTOR, ".turn") == []
    box.clear()
    box.send_keys(json.dumps(schema))
    temperature = browser.find_element(By.ID, "pg-temperature")
    temperature.clear()
    temperature.send_keys("0")
    browser.find_element(By.ID, "pg-send").click()
    WebDriverWait(browser, 60).until(lambda b: b.find_elements(By.CSS_SELECTOR, ".turn.assistant .verdict"))
    assert not browser.find_element(By.ID, "pg-schema-error").is_displayed()
    assert last_answer(browser).find_element(By.CLASS_NAME, "verdict").text == "valid JSON"
    shown = last_answer(browser).find_element(By.CSS_SELECTOR, ".text.json").text
    assert "\n  " in shown and set(json.loads(shown)) == {"name", "n"}  # pretty-printed, as the schema asks
    open_code(browser)
    python = text_of(browser, "#pg-python")
    assert 'response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": {' in python
    screenshot(browser, "playground-json")


def test_a_tool_call_shows_parsed_and_a_pasted_result_answers_it(live_blaze, browser):
    make_user("tom", "viewer")
    upstream = OpenAIUpstream()  # streams a call of get_weather, in OpenAI's deltas
    weather = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    try:
        Engine.objects.create(name="far-tools", kind="llm", backend="remote", base_url=upstream.base_url("tools"))
        open_playground(browser, live_blaze, "tom", "far-tools")
        tools = browser.find_element(By.ID, "pg-tools")
        tools.send_keys("[{")
        ask(browser, "Weather in Paris?")
        assert text_of(browser, "#pg-tools-error").startswith("Tools is not valid JSON")
        tools.clear()
        tools.send_keys(json.dumps(weather))
        Select(browser.find_element(By.ID, "pg-tool-choice")).select_by_value("call:get_weather")
        browser.find_element(By.ID, "pg-send").click()
        WebDriverWait(browser, 30).until(lambda b: b.find_elements(By.CSS_SELECTOR, ".turn.assistant .call"))
        assert text_of(browser, ".call .call-name").startswith("call get_weather")
        assert text_of(browser, ".call .call-name code") == "call_upstream"
        assert json.loads(text_of(browser, ".call pre")) == {"city": "Paris"}
        assert browser.find_element(By.ID, "pg-as").get_attribute("value") == "call_upstream"  # a result answers it
        browser.find_element(By.ID, "pg-prompt").send_keys('{"sky": "clear"}')
        screenshot(browser, "playground-tool-call")
        browser.find_element(By.ID, "pg-send").click()
        WebDriverWait(browser, 30).until(lambda b: len(b.find_elements(By.CSS_SELECTOR, ".turn.assistant .call")) == 2)
    finally:
        upstream.stop()
    asked = upstream.bodies[-1]
    assert asked["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert [m["role"] for m in asked["messages"]] == ["user", "assistant", "tool"]
    [call] = asked["messages"][1]["tool_calls"]
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert asked["messages"][2] == {"role": "tool", "tool_call_id": "call_upstream", "content": '{"sky": "clear"}'}
    assert text_of(browser, ".turn.tool .role") == "RESULT OF GET_WEATHER (CALL_UPSTREAM)"


def test_stop_ends_a_long_generation_in_the_worker_within_a_second(live_blaze, engine_worker, browser, smollm2_path):
    make_user("stan", "viewer")
    Engine.objects.create(name="smol-stop", kind="llm", model=smollm2_path, config={"max_new_tokens": 512})
    open_playground(browser, live_blaze, "stan", "smol-stop")
    ask(browser, "Write a long story about a lighthouse keeper.", max_tokens=400)
    wait = WebDriverWait(browser, 120)  # the model loads first
    wait.until(lambda b: len(last_answer(b).find_element(By.CLASS_NAME, "text").text) > 10)
    assert worker_info(engine_worker.hostname)["in_flight"] == 1
    browser.find_element(By.ID, "pg-stop-button").click()
    stopped = time.monotonic()
    WebDriverWait(browser, 5).until(lambda b: "stopped" in last_answer(b).find_element(By.CLASS_NAME, "stats").text)
    WebDriverWait(browser, 5, poll_frequency=0.1).until(
        lambda b: worker_info(engine_worker.hostname)["in_flight"] == 0)
    assert time.monotonic() - stopped < 1.5  # the worker let go of it (its heartbeat runs every 0.5 s here)
    screenshot(browser, "playground-stopped")


def test_an_answer_full_of_markup_is_shown_as_text_and_runs_nothing(live_blaze, browser):
    make_user("mark", "viewer")
    upstream = OpenAIUpstream()
    try:
        Engine.objects.create(name="hostile", kind="llm", backend="remote", base_url=upstream.base_url("markup"))
        open_playground(browser, live_blaze, "mark", "hostile")
        ask(browser, "Say something dangerous.")
        WebDriverWait(browser, 30).until(
            lambda b: "served by" in last_answer(b).find_element(By.CLASS_NAME, "stats").text)
    finally:
        upstream.stop()
    text = last_answer(browser).find_element(By.CLASS_NAME, "text")
    assert "<script>window.__pwned = 1</script>" in text.text  # shown, as text
    assert text.find_elements(By.TAG_NAME, "img") == [] and text.find_elements(By.TAG_NAME, "a") == []
    assert browser.execute_script("return window.__pwned") is None


def test_compare_streams_two_panes_at_once(live_blaze, engine_worker, browser, tiny_llm_path):
    make_user("cora", "viewer")
    for name in ("tiny-left", "tiny-right"):
        Engine.objects.create(name=name, kind="llm", model=tiny_llm_path, config={"max_new_tokens": 128})
    open_playground(browser, live_blaze, "cora", mode="compare")
    browser.find_element(By.ID, "cmp-prompt").send_keys("the cat sat")
    browser.find_element(By.ID, "cmp-send").click()
    wait = WebDriverWait(browser, 60)
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, ".pane")) == 2 and all(
        "tok/s" in pane.text for pane in b.find_elements(By.CSS_SELECTOR, ".pane .stats")))
    served = [pane.text for pane in browser.find_elements(By.CSS_SELECTOR, ".pane .stats")]
    assert "served by tiny-left" in served[0] and "served by tiny-right" in served[1]
    screenshot(browser, "playground-compare")

    browser.find_element(By.ID, "cmp-sync").click()  # each pane its own parameters: the right one stops at 3 tokens
    right = browser.find_elements(By.CSS_SELECTOR, ".pane")[1]
    right.find_element(By.CSS_SELECTOR, ".pane-params summary").click()
    own = right.find_element(By.NAME, "max_tokens")
    own.clear()
    own.send_keys("3")
    browser.find_element(By.ID, "cmp-send").click()
    wait.until(lambda b: all("tok/s" in pane.text for pane in b.find_elements(By.CSS_SELECTOR, ".pane .stats")))
    left, right = (int(re.search(r"(\d+) tokens", pane.text)[1])
                   for pane in browser.find_elements(By.CSS_SELECTOR, ".pane .stats"))
    assert right == 3 and left > 3
    open_code(browser)
    python = text_of(browser, "#pg-python")
    assert '"model": "tiny-right"' in python and '"max_tokens": 3' in python and '"max_tokens": 128' in python
    screenshot(browser, "playground-compare-own-parameters")


def test_the_similarity_matrix_of_three_texts_is_drawn(live_blaze, engine_worker, browser, key_for, tmp_path):
    from engines.demo import minilm_path

    emma = make_user("emma", "viewer")
    Engine.objects.create(name="minilm-pg", kind="embedding", model=minilm_path(), config={"normalize": True})
    open_playground(browser, live_blaze, "emma", mode="embed")
    browser.find_element(By.ID, "em-go").click()  # cat, kitten, car
    WebDriverWait(browser, 90).until(lambda b: "384 dimensions" in text_of(b, "#em-meta"))
    matrix = browser.execute_script("return document.getElementById('em-heatmap').data[0].z")
    assert len(matrix) == 3 and matrix[0][0] == pytest.approx(1, abs=1e-3)
    assert matrix[0][1] > matrix[0][2]  # cat is nearer kitten than car
    open_code(browser)
    _, raw = key_for(emma, scopes=("inference",))
    assert run_copied(text_of(browser, "#pg-python"), raw, tmp_path).strip() == "[384, 384, 384]"
    screenshot(browser, "playground-embeddings")


def test_an_image_s_progress_advances_then_it_shows_and_img2img_starts_from_an_upload(
        live_blaze, engine_worker, browser, tiny_diffusion_path, tmp_path):
    from PIL import Image

    make_user("ivy", "viewer")
    Engine.objects.create(name="tiny-paint", kind="diffusion", model=tiny_diffusion_path,
                          config={"max_size": 128, "max_steps": 50, "safety_checker": False})
    open_playground(browser, live_blaze, "ivy", mode="images")
    browser.execute_script(  # every width the progress bar takes, from before the request
        "window.__widths = []; new MutationObserver(() => window.__widths.push("
        "document.querySelector('#img-progress .bar-fill').style.width)).observe("
        "document.querySelector('#img-progress .bar-fill'), {attributes: true});")
    browser.find_element(By.ID, "img-prompt").send_keys("a red cat")
    steps = browser.find_element(By.ID, "img-steps")
    steps.clear()
    steps.send_keys("20")
    browser.find_element(By.ID, "img-go").click()
    wait = WebDriverWait(browser, 90)
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#gallery img")) == 1)
    widths = browser.execute_script("return window.__widths")
    assert len(set(widths)) > 3 and widths[-1] == "100%"  # it moved step by step, then finished
    wait.until(lambda b: b.execute_script("return document.querySelector('#gallery img').naturalWidth") == 64)
    seed = text_of(browser, "#gallery figcaption").removeprefix("seed ")
    browser.find_element(By.CSS_SELECTOR, "#gallery button").click()
    assert browser.find_element(By.ID, "img-seed").get_attribute("value") == seed
    screenshot(browser, "playground-images")

    upload = tmp_path / "start.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(upload)
    browser.find_element(By.ID, "img-image").send_keys(str(upload))
    browser.find_element(By.ID, "img-go").click()
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#gallery img")) == 2)
    assert "served by tiny-paint" in text_of(browser, "#img-status")
    open_code(browser)
    python = text_of(browser, "#pg-python")
    assert "client.images.edit(" in python and 'image=open("input.png", "rb")' in python and '"steps": 20' in python


def test_stop_ends_an_image_s_steps_in_the_worker(live_blaze, engine_worker, browser, tiny_diffusion_path):
    make_user("ivan", "viewer")
    Engine.objects.create(name="tiny-stop", kind="diffusion", model=tiny_diffusion_path,
                          config={"max_size": 256, "max_steps": 500, "safety_checker": False})
    open_playground(browser, live_blaze, "ivan", mode="images")
    browser.find_element(By.ID, "img-prompt").send_keys("a very slow cat")
    for field, value in (("img-steps", "500"), ("img-size", "256x256")):
        browser.find_element(By.ID, field).clear()
        browser.find_element(By.ID, field).send_keys(value)
    browser.find_element(By.ID, "img-go").click()
    step = re.compile(r"step (\d+) of")
    WebDriverWait(browser, 90).until(lambda b: int((step.match(text_of(b, "#img-status")) or [0, 0])[1]) >= 3)
    shown = int(step.match(text_of(browser, "#img-status"))[1])
    browser.find_element(By.ID, "img-stop").click()
    WebDriverWait(browser, 5).until(lambda b: text_of(b, "#img-status").startswith("stopped"))
    screenshot(browser, "playground-images-stopped")

    def steps_run():
        """The steps the worker ran of the stopped picture, from its log line saying so (None before)."""
        said = [json.loads(line) for line in engine_worker.log().splitlines()
                if line.startswith("{") and '"steps_run"' in line and '"tiny-stop"' in line]
        return said[-1]["steps_run"] if said else None

    # The worker skipped the rest: its log says it stopped after the steps shown, far short of the 500,
    # and it let go of the request at once.
    WebDriverWait(browser, 15, poll_frequency=0.1).until(
        lambda b: steps_run() is not None, "the worker never logged that it stopped the picture's steps")
    assert shown <= steps_run() < 500
    WebDriverWait(browser, 2, poll_frequency=0.1).until(lambda b: worker_info(engine_worker.hostname)["in_flight"] == 0)
    # And a picture asked for next is drawn now, not after the 500 steps.
    steps = browser.find_element(By.ID, "img-steps")
    steps.clear()
    steps.send_keys("2")
    browser.find_element(By.ID, "img-go").click()
    WebDriverWait(browser, 20).until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#gallery img")) == 1)
