"""The /v1 surface under property-based input (hypothesis): any body, well-formed or not, sent to the
chat, completions and embeddings endpoints of a live server is answered below 500; every refusal is
in OpenAI's error shape; every success in the shape OpenAI's clients parse. A loopback upstream
answers what passes validation, so a 5xx could only be Blaze's."""

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounts import services as account_services
from accounts.audit import Actor
from engines import services
from tests.conftest import make_user
from tests.upstream import OpenAIUpstream

pytestmark = [pytest.mark.fuzz, pytest.mark.slow, pytest.mark.django_db(transaction=True)]
EXAMPLES = 60  # per endpoint; derandomized, so CI sees the same bodies every run

anything = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
model = st.sampled_from(["far", "nowhere", ""]) | anything
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "tool", "nobody"]) | anything},
    optional={"content": st.text(max_size=40) | anything, "name": anything},
)
GENERATION = {
    "temperature": st.floats(-1, 3) | anything, "top_p": st.floats(-1, 2) | anything,
    "max_tokens": st.integers(-3, 10**7) | anything, "seed": st.integers(-3, 2**64) | anything,
    "stream": st.booleans() | anything, "stop": st.lists(st.text(max_size=5), max_size=6) | anything,
    "n": st.integers(-1, 5) | anything, "user": anything, "extra": anything,
}
BODIES = {
    "/v1/chat/completions": st.fixed_dictionaries(
        {"model": model}, optional={"messages": st.lists(message, max_size=3) | anything, **GENERATION}),
    "/v1/completions": st.fixed_dictionaries(
        {"model": model}, optional={"prompt": st.text(max_size=40) | st.lists(st.text(max_size=10)) | anything,
                                    **GENERATION}),
    "/v1/embeddings": st.fixed_dictionaries(
        {"model": model}, optional={"input": st.text(max_size=40) | st.lists(st.text(max_size=10)) | anything,
                                    "encoding_format": st.sampled_from(["float", "base64", "bits"]) | anything,
                                    "dimensions": anything}),
}
SUCCESS_KEYS = {"/v1/chat/completions": "choices", "/v1/completions": "choices", "/v1/embeddings": "data"}


@pytest.fixture
def v1(live_blaze):
    upstream = OpenAIUpstream()
    actor = Actor.system("test")
    services.engine_create(actor=actor, name="far", kind="llm", backend="remote", model="up",
                           base_url=upstream.base_url("ok"), config={"max_new_tokens": 64})
    services.engine_create(actor=actor, name="far-embed", kind="embedding", backend="remote", model="up",
                           base_url=upstream.base_url("ok"))
    _, raw = account_services.api_key_create(actor=actor, user=make_user("fuzz", "viewer"), name="fuzz",
                                             scopes=["inference"])
    with httpx.Client(base_url=live_blaze, headers={"Authorization": f"Bearer {raw}"}, timeout=30) as client:
        yield client
    upstream.stop()


def answered_as_openai_would(path, response):
    assert response.status_code < 500, (path, response.status_code, response.text[:500])
    if response.status_code >= 400:
        error = response.json()["error"]
        assert isinstance(error["message"], str) and error["message"] and isinstance(error["type"], str)
        assert {"param", "code"} <= set(error)
    elif response.headers["content-type"].startswith("text/event-stream"):
        assert response.text.rstrip().endswith("data: [DONE]")
    else:
        assert SUCCESS_KEYS[path] in response.json()


@pytest.mark.parametrize("path", BODIES)
def test_any_body_is_answered_below_500_in_openai_s_shape(v1, path):
    if path == "/v1/embeddings":
        bodies = BODIES[path].map(lambda body: {**body, "model": "far-embed"} if body["model"] == "far" else body)
    else:
        bodies = BODIES[path]

    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(body=bodies)
    def check(body):
        answered_as_openai_would(path, v1.post(path, content=json.dumps(body).encode(),
                                               headers={"Content-Type": "application/json"}))

    check()


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b"null", b'"text"', b"\xff\xfe", b'{"model": "far"' + b" " * 10])
def test_a_body_that_is_not_a_json_object_is_a_400_in_openai_s_shape(v1, raw):
    response = v1.post("/v1/chat/completions", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    answered_as_openai_would("/v1/chat/completions", response)
