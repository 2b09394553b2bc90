"""Structured logs: JSON lines carrying the request id from the HTTP response into the worker."""

import json
import logging
import time

import pytest

from core import logs
from engines.models import Engine


def test_log_lines_are_json_with_the_request_id():
    record = logging.LogRecord("blaze", logging.INFO, __file__, 1, "hello %s", ("there",), None)
    logs.request_id.set("req-42")
    logs.RequestIdFilter().filter(record)
    line = json.loads(logs.BlazeJsonFormatter().format(record))
    assert line["message"] == "hello there" and line["request_id"] == "req-42" and line["level"] == "INFO"


def test_a_well_formed_request_id_is_kept_and_a_bad_one_replaced(api):
    assert api.get("/health", HTTP_X_REQUEST_ID="trace-7").headers["X-Request-ID"] == "trace-7"
    replaced = api.get("/health", HTTP_X_REQUEST_ID="bad id\n").headers["X-Request-ID"]
    assert replaced != "bad id\n" and len(replaced) == 32


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_request_id_reaches_the_worker_log(engine_worker, live_blaze, tiny_llm_path, openai_client):
    Engine.objects.create(name="traced", kind="llm", model=tiny_llm_path, config={"max_new_tokens": 8})
    response = openai_client.chat.completions.with_raw_response.create(
        model="traced", messages=[{"role": "user", "content": "hi"}], max_tokens=2,
        extra_headers={"X-Request-ID": "trace-into-the-worker"},
    )
    assert response.headers["X-Request-ID"] == "trace-into-the-worker"

    def worker_lines():
        lines = []
        for raw in engine_worker.log().splitlines():
            try:
                lines.append(json.loads(raw))
            except ValueError:
                continue
        return [line for line in lines if line.get("request_id") == "trace-into-the-worker"]

    deadline = time.monotonic() + 10
    while not worker_lines() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert any("traced" in line["message"] for line in worker_lines())
