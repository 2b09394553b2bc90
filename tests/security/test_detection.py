"""Threat detection in paths, query strings and JSON bodies, and not in the text people send to a model."""

from urllib.parse import quote

import pytest

from accounts.models import AuditEvent

ATTACKS = {
    "sql_injection": "x' UNION SELECT password FROM users --",
    "xss": "<script>alert(1)</script>",
    "path_traversal": "../../etc/passwd",
}


def refused_as_threat(response):
    return response.status_code == 400 and b"looks like" in response.content


@pytest.mark.parametrize("kind", ATTACKS)
def test_attack_in_the_path_is_refused_and_recorded(kind, client_at, security_events):
    response = client_at("203.0.113.10").get(f"/engines/{quote(ATTACKS[kind], safe='')}/")

    assert refused_as_threat(response) and b"the path" in response.content
    assert security_events() == [f"security.{kind}"]


@pytest.mark.parametrize("kind", ATTACKS)
def test_attack_in_a_query_parameter_is_refused_naming_it(kind, client_at, security_events):
    response = client_at("203.0.113.11").get("/api/engines/", {"ordering": ATTACKS[kind]})

    assert refused_as_threat(response)
    assert response.json()["fields"] == {"ordering": [response.json()["error"]]}
    assert "query parameter 'ordering'" in response.json()["error"]
    assert security_events() == [f"security.{kind}"]


@pytest.mark.parametrize("kind", ATTACKS)
def test_attack_in_a_json_field_is_refused_naming_its_path(kind, client_at, security_events):
    body = {"name": "ok", "config": {"notes": [ATTACKS[kind]]}}
    response = client_at("203.0.113.12").post("/api/engines/", body, content_type="application/json")

    assert refused_as_threat(response)
    assert "config.notes[0]" in response.json()["error"]
    assert security_events() == [f"security.{kind}"]


def test_detection_records_where_and_from_whom(client_at, security_events):
    client_at("203.0.113.13").get("/api/engines/", {"search": "1' OR 1=1 --"})

    event = AuditEvent.objects.get(action="security.sql_injection")
    assert event.ip == "203.0.113.13"
    assert event.target == "GET /api/engines/"
    assert event.data["where"] == "the query parameter 'search'"


def test_double_url_encoding_is_decoded_before_matching(client_at, security_events):
    response = client_at("203.0.113.14").get("/engines/%252e%252e%252fetc%252fpasswd/")

    assert refused_as_threat(response)
    assert security_events() == ["security.path_traversal"]


def test_ordinary_query_and_file_names_pass(client_at, security_events):
    response = client_at("203.0.113.15").get("/api/engines/", {"search": "select the best option", "file": "a..b.txt"})

    assert response.status_code == 401
    assert security_events() == []


def test_passwords_are_not_inspected(client_at, security_events):
    response = client_at("203.0.113.16").post(
        "/api/auth/token/", {"username": "nobody", "password": "x' OR 1=1 --"}, content_type="application/json")

    assert response.status_code == 401
    assert security_events() == []


@pytest.fixture
def inference(viewer_user, key_for, client_at):
    """inference(path, body) → the response to a /v1 call with a viewer's `inference` key."""
    _, raw = key_for(viewer_user, ["inference"])
    client = client_at("203.0.113.20")
    return lambda path, body: client.post(path, body, content_type="application/json",
                                          HTTP_AUTHORIZATION=f"Bearer {raw}")


@pytest.mark.parametrize("question", [
    "How do I write SELECT * FROM users WHERE name = 'x' OR 1=1?",
    "<script>alert(1)</script> — what does this do?",
    "Why does ../../etc/passwd show up in my access logs?",
])
def test_chat_about_sql_or_html_reaches_the_model(question, inference, security_events):
    response = inference("/v1/chat/completions", {
        "model": "no-such-model", "messages": [{"role": "user", "content": question}], "stop": ["' OR 1=1"],
    })

    assert response.json()["error"]["code"] == "model_not_found"
    assert security_events() == []


@pytest.mark.parametrize("path, body", [
    ("/v1/completions", {"prompt": "Finish: ' UNION SELECT", "suffix": "<script>"}),
    ("/v1/embeddings", {"input": ["<img src=x onerror=alert(1)>", "1; DROP TABLE users"]}),
    ("/v1/images/generations", {"prompt": "a poster saying <script>", "negative_prompt": "../../"}),
])
def test_prompts_of_every_inference_endpoint_reach_the_model(path, body, inference, security_events):
    response = inference(path, {"model": "no-such-model", **body})

    assert response.json()["error"]["code"] == "model_not_found"
    assert security_events() == []


def test_inference_fields_that_are_not_prompts_are_still_inspected(inference, security_events):
    response = inference("/v1/chat/completions", {"model": "<script>alert(1)</script>", "messages": []})

    error = response.json()["error"]
    assert response.status_code == 400
    assert (error["code"], error["param"], error["type"]) == ("threat_detected", "model", "invalid_request_error")
    assert security_events() == ["security.xss"]
