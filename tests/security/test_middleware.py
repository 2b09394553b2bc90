"""The edge: request size limits, the block list on every request, and the async path daphne drives."""

import base64
import json
from datetime import UTC, datetime

from django.core.files.uploadedfile import SimpleUploadedFile

from accounts.audit import Actor
from security import services


def block(network, **fields):
    return services.ip_block(actor=Actor.system("test"), network=network, reason="test", **fields)


def test_body_declared_over_the_limit_gets_413(client_at, settings):
    settings.BLAZE_MAX_REQUEST_BYTES = 1000
    body = json.dumps({"model": "m", "prompt": "x" * 2000})

    response = client_at("203.0.113.30").post("/v1/completions", body, content_type="application/json")

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert "limit of 1000 bytes" in response.json()["error"]["message"]


def test_upload_over_the_limit_gets_413(client_at, settings):
    settings.BLAZE_MAX_REQUEST_BYTES = 1000
    image = SimpleUploadedFile("big.png", b"x" * 2000, content_type="image/png")

    response = client_at("203.0.113.31").post("/v1/images/edits", {"model": "m", "prompt": "p", "image": image})

    assert response.status_code == 413


def test_chunked_body_is_measured_as_received(asgi_request, settings):
    settings.BLAZE_MAX_REQUEST_BYTES = 1000
    headers = {"content-type": "application/json"}

    small = asgi_request("POST", "/v1/completions", json.dumps({"model": "m", "prompt": "hi"}).encode(), headers)
    big = asgi_request("POST", "/v1/completions", json.dumps({"model": "m", "prompt": "x" * 2000}).encode(), headers)

    assert small.status_code == 401
    assert big.status_code == 413


def test_default_limit_admits_the_largest_image_edit_as_base64_json(client_at):
    image = base64.b64encode(b"\x89PNG" + b"x" * (20 * 1024 * 1024 - 4)).decode()
    body = json.dumps({"model": "m", "prompt": "p", "image": image})

    response = client_at("203.0.113.32").post("/v1/images/edits", body, content_type="application/json")

    assert response.status_code == 401  # past the edge: the view asks for a key


def test_async_path_refuses_and_records_a_detection(asgi_request, security_events):
    response = asgi_request("GET", "/engines/<script>alert(1)</script>/")

    assert response.status_code == 400
    assert security_events() == ["security.xss"]


def test_a_nul_byte_in_a_json_body_is_refused_and_its_detection_recorded(client_at, db):
    from accounts.models import AuditEvent

    body = json.dumps({"model": "m", "a\u0000b": 1})  # PostgreSQL stores no NUL: the record escapes it
    response = client_at("203.0.113.80").post("/v1/completions", body, content_type="application/json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "threat_detected"
    event = AuditEvent.objects.get(action="security.path_traversal")
    assert "\\x00" in event.data["sample"] and "\x00" not in event.data["sample"]


def test_blocked_network_gets_403_everywhere_but_health(client_at, db):
    block("198.51.100.0/24")
    client = client_at("198.51.100.7")

    assert client.get("/api/engines/").json()["error"].startswith("Requests from 198.51.100.7 are blocked")
    assert client.get("/v1/models").json()["error"]["code"] == "ip_blocked"
    assert client.get("/login/").status_code == 403
    assert client.get("/health").status_code == 200
    assert client_at("198.51.101.7").get("/login/").status_code == 200


def test_block_with_expiry_says_until_when(client_at, db):
    until = datetime(2100, 1, 2, 3, 4, 5, tzinfo=UTC)
    block("198.51.100.8", expires_at=until)

    response = client_at("198.51.100.8").get("/api/engines/")
    assert "until 2100-01-02 03:04:05 UTC" in response.json()["error"]


def test_blocked_requests_cost_no_database_query(client_at, db, django_assert_num_queries):
    block("198.51.100.9")
    client = client_at("198.51.100.9")
    client.get("/api/engines/")  # the first request after a change rebuilds the cached list

    with django_assert_num_queries(0):
        assert client.get("/api/engines/").status_code == 403


def test_unblocking_takes_effect_at_once(client_at, db):
    blocked = block("198.51.100.10")
    client = client_at("198.51.100.10")
    assert client.get("/login/").status_code == 403

    services.ip_unblock(actor=Actor.system("test"), block=blocked)

    assert client.get("/login/").status_code == 200


def test_exempt_address_is_never_refused_by_a_block(client_at, settings, db):
    settings.BLAZE_BLOCK_EXEMPT_IPS = ["198.51.100.11"]
    block("198.51.100.0/24")

    assert client_at("198.51.100.11").get("/login/").status_code == 200
    assert client_at("198.51.100.12").get("/login/").status_code == 403
