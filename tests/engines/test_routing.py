"""Routes serving real requests: two daphne processes in front of loopback OpenAI-compatible upstreams
(a healthy one, one answering 500s, one too slow, one refusing connections, one answering 400s).

The servers run with short timeouts so that failures show in seconds: an upstream read times out
after 1 s, a breaker opens after 3 consecutive failures and half-opens after 2 s, retries wait
at most 50 ms.
"""

import time

import httpx
import pytest
from openai import OpenAI

from accounts.audit import Actor
from accounts.models import ApiKey
from accounts.services import api_key_create, api_key_revoke
from engines.models import Engine, Route, RouteTarget
from engines.services import engine_set_enabled, engine_update
from engines.serving.resilience import breaker, health
from security.services import ip_block, ip_unblock
from tests.conftest import make_user
from tests.upstream import OpenAIUpstream, refused_base_url

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SERVER_ENV = {
    "BLAZE_UPSTREAM_READ_TIMEOUT": "1", "BLAZE_RETRY_BASE_SECONDS": "0.01", "BLAZE_RETRY_MAX_DELAY_SECONDS": "0.05",
    "BLAZE_BREAKER_FAILURE_THRESHOLD": "3", "BLAZE_BREAKER_RESET_SECONDS": "2", "BLAZE_HEALTH_CHECK_INTERVAL": "5",
    "BLAZE_BLOCK_EXEMPT_IPS": "",  # loopback, where the tests ask from, is exempt from blocks by default
}
HELLO = "Hello from upstream."


@pytest.fixture(scope="module")
def upstream():
    server = OpenAIUpstream(slow_seconds=3)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def web(web_pair):
    return web_pair(**SERVER_ENV)


@pytest.fixture(autouse=True)
def _fresh_counts_and_same_settings(upstream, settings):
    upstream.hits.clear()
    upstream.bodies.clear()
    for name, value in SERVER_ENV.items():  # this process reads the breakers as the servers do
        setattr(settings, name, type(getattr(settings, name))(value))


@pytest.fixture
def key(db):
    _, raw = api_key_create(actor=Actor.system("test"), user=make_user("app", "viewer"), name="app",
                            scopes=["inference"])
    return raw


def client(url, key):
    return OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=30)


def remote(name, base_url, model="up"):
    return Engine.objects.create(name=name, kind="llm", backend="remote", base_url=base_url, model=model)


def route(name, *engines, strategy="round_robin"):
    made = Route.objects.create(name=name, strategy=strategy)
    for engine in engines:
        RouteTarget.objects.create(route=made, engine=engine)
    return made


def ask(openai_client, model="chat", **kwargs):
    return openai_client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], **kwargs)


def test_a_failing_target_is_invisible_to_clients_and_its_breaker_opens(web, upstream, key):
    route("chat", remote("broken", upstream.base_url("fail")), remote("good", upstream.base_url("ok")))
    answers = [ask(client(web[0], key)).choices[0].message.content for _ in range(10)]
    assert answers == [HELLO] * 10
    # Requests that reach `broken` fail over to `good`; after 3 failures its breaker opens and it is
    # skipped: no 4th call reaches it.
    assert upstream.hits["fail"] == 3
    assert breaker.CircuitBreaker("broken").state() == breaker.OPEN
    status = httpx.get(f"{web[1]}/api/routes/chat/status/", headers={"Authorization": f"Bearer {staff_key()}"}).json()
    rows = {row["engine"]: row for row in status["targets"]}
    assert rows["broken"]["breaker"] == "open" and rows["broken"]["available"] is False
    assert rows["broken"]["reason"] == "circuit breaker open"
    assert rows["broken"]["errors"] == 3 and rows["good"]["errors"] == 0
    assert rows["good"]["requests"] == 10 and rows["good"]["p50"] is not None


def staff_key():
    _, raw = api_key_create(actor=Actor.system("test"), user=make_user("ops", "operator"), name="ops", scopes=["read"])
    return raw


def test_a_recovered_target_gets_a_trial_after_the_reset_timeout_and_rejoins(web, upstream, key):
    broken = remote("flaky", upstream.base_url("fail"), model="model-flaky")
    route("chat", broken, remote("good", upstream.base_url("ok")))
    for _ in range(6):
        ask(client(web[0], key))
    assert breaker.CircuitBreaker("flaky").state() == breaker.OPEN
    upstream.bodies.clear()
    engine_update(actor=Actor.system("test"), engine=broken, base_url=upstream.base_url("ok"))  # the host is fixed
    time.sleep(2.2)  # BLAZE_BREAKER_RESET_SECONDS
    assert breaker.CircuitBreaker("flaky").state() == breaker.HALF_OPEN
    for _ in range(6):
        assert ask(client(web[1], key)).choices[0].message.content == HELLO
    assert breaker.CircuitBreaker("flaky").state() == breaker.CLOSED  # 2 trial successes close it
    assert [body["model"] for body in upstream.bodies].count("model-flaky") >= 2


def test_a_change_applies_on_every_web_process_at_once(web, upstream, key):
    """Each web process keeps the keys and routes it looked up (core.lookups); a change made anywhere
    must end those copies with its commit, not after a cache time."""
    route("chat", remote("good", upstream.base_url("ok")))
    for url in web:
        assert ask(client(url, key)).choices[0].message.content == HELLO
    engine_set_enabled(actor=Actor.system("test"), engine=Engine.objects.get(name="good"), enabled=False)
    for url in web:
        response = httpx.post(f"{url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                              json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]})
        assert response.status_code == 503 and "engine good disabled" in response.json()["error"]["message"]
    api_key_revoke(actor=Actor.system("test"), key=ApiKey.objects.get(name="app"))
    for url in web:
        response = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 401 and "revoked" in response.json()["error"]["message"]


def test_a_block_applies_on_every_web_process_at_once_and_lifts_the_same_way(web, key):
    """Each web process keeps the block list too (core.lookups), read under the same token."""
    models = [lambda url=url: httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {key}"}) for url in web]
    assert [ask_models().status_code for ask_models in models] == [200, 200]  # each holds the empty list
    block = ip_block(actor=Actor.system("test"), network="127.0.0.1", reason="test")
    try:
        refused = [ask_models() for ask_models in models]
        assert [(r.status_code, r.json()["error"]["code"]) for r in refused] == [(403, "ip_blocked")] * 2
    finally:
        ip_unblock(actor=Actor.system("test"), block=block)  # else the servers refuse the next tests
    assert [ask_models().status_code for ask_models in models] == [200, 200]


def test_a_4xx_is_the_clients_answer_and_is_never_retried_or_failed_over(web, upstream, key):
    route("chat", remote("picky", upstream.base_url("bad")), remote("good", upstream.base_url("ok")))
    response = httpx.post(f"{web[0]}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                          json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "max_tokens"
    assert (upstream.hits["bad"], upstream.hits["ok"]) == (1, 0)
    assert breaker.CircuitBreaker("picky").state() == breaker.CLOSED


def test_every_target_down_is_a_503_that_says_why_not_a_hang(web, upstream, key):
    route("chat", remote("broken", upstream.base_url("fail")), remote("gone", refused_base_url()),
          remote("sleepy", upstream.base_url("slow")))
    started = time.monotonic()
    response = httpx.post(f"{web[0]}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, timeout=30,
                          json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]})
    elapsed = time.monotonic() - started
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "no_target_available"
    message = error["message"]
    assert message.startswith("No target of route 'chat' is available")
    assert "broken: The upstream answered HTTP 500" in message
    assert "gone: The host could not be reached" in message
    assert "sleepy: The host did not answer in time" in message
    assert elapsed < 6  # the slow target's 1 s read timeout (with one retry as the last target), not its 3 s


def test_a_slow_target_times_out_and_the_request_fails_over(web, upstream, key):
    route("chat", remote("sleepy", upstream.base_url("slow")), remote("good", upstream.base_url("ok")))
    started = time.monotonic()
    assert ask(client(web[0], key)).choices[0].message.content == HELLO
    assert 1 <= time.monotonic() - started < 3
    assert upstream.hits["slow"] == 1  # one try per target while another remains


def test_streams_pass_through_chunk_by_chunk(web, upstream, key):
    route("chat", remote("good", upstream.base_url("ok")))
    pieces = [chunk.choices[0].delta.content for chunk in ask(client(web[0], key), stream=True) if chunk.choices]
    assert pieces == ["Hello", " from", " upstream", "."]
    assert upstream.bodies[-1]["stream"] is True and upstream.bodies[-1]["model"] == "up"


def test_a_stream_fails_over_before_its_first_chunk(web, upstream, key):
    route("chat", remote("broken", upstream.base_url("fail")), remote("good", upstream.base_url("ok")))
    pieces = [chunk.choices[0].delta.content for chunk in ask(client(web[0], key), stream=True) if chunk.choices]
    assert "".join(pieces) == HELLO and upstream.hits["fail"] == 1


def test_a_remote_engine_by_its_own_name_is_retried_within_the_deadline(web, upstream, key):
    remote("solo", upstream.base_url("fail"))
    response = httpx.post(f"{web[0]}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                          json={"model": "solo", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 502
    assert "answered HTTP 500" in response.json()["error"]["message"]
    assert upstream.hits["fail"] == 3  # BLAZE_RETRY_ATTEMPTS
    remote("direct", upstream.base_url("ok"))
    assert ask(client(web[0], key), model="direct").choices[0].message.content == HELLO


def test_embeddings_route_to_a_remote_host(web, upstream, key):
    far = Engine.objects.create(name="far-embed", kind="embedding", backend="remote", base_url=upstream.base_url("ok"))
    route("embed", far)
    response = client(web[0], key).embeddings.create(model="embed", input=["a", "b"])
    assert [item.embedding for item in response.data] == [[0.5, 0.5], [0.5, 0.5]]


def test_two_web_processes_share_the_turn_counter_and_the_breakers(web, upstream, key):
    route("chat", remote("a", upstream.base_url("ok"), model="model-a"),
          remote("b", upstream.base_url("ok"), model="model-b"))
    for index in range(6):  # alternate between the two processes
        ask(client(web[index % 2], key))
    assert [body["model"] for body in upstream.bodies] == ["model-a", "model-b"] * 3
    Route.objects.filter(name="chat").delete()
    upstream.bodies.clear()
    route("chat2", remote("bad-host", upstream.base_url("fail")), remote("c", upstream.base_url("ok")))
    for _ in range(5):
        ask(client(web[0], key), model="chat2")  # process A opens bad-host's breaker …
    assert upstream.hits["fail"] == 3
    for _ in range(4):
        ask(client(web[1], key), model="chat2")  # … and process B skips it
    assert upstream.hits["fail"] == 3


def test_the_router_skips_a_target_the_health_checks_find_down(web, upstream, key):
    route("chat", remote("down", upstream.base_url("ok"), model="model-down"), remote("up2", upstream.base_url("ok")))
    monitor = health.HealthMonitor("down")
    for _ in range(3):  # BLAZE_HEALTH_UNHEALTHY_AFTER failed checks
        monitor.record_check(False, 0.01, detail="GET /models: 503")
    for _ in range(4):
        ask(client(web[0], key))
    assert "model-down" not in [body["model"] for body in upstream.bodies]
    monitor.record_check(True, 0.01)  # recovered
    for _ in range(4):
        ask(client(web[0], key))
    assert "model-down" in [body["model"] for body in upstream.bodies]


def test_models_lists_routes_and_a_route_hides_the_engine_of_its_name(web, upstream, key):
    remote("chat", upstream.base_url("fail"))
    route("chat", remote("good", upstream.base_url("ok")))
    ids = [model.id for model in client(web[0], key).models.list().data]
    assert ids.count("chat") == 1 and "good" in ids
    assert ask(client(web[0], key)).choices[0].message.content == HELLO
    assert upstream.hits["fail"] == 0


def test_a_local_replica_that_cannot_load_fails_over_to_a_remote_one(web, upstream, key, engine_worker):
    broken = Engine.objects.create(name="no-weights", kind="llm", model="/nonexistent/model")
    route("chat", broken, remote("good", upstream.base_url("ok")))
    assert ask(client(web[0], key), max_tokens=3).choices[0].message.content == HELLO
    status = httpx.get(f"{web[0]}/api/routes/chat/status/", headers={"Authorization": f"Bearer {staff_key()}"}).json()
    rows = {row["engine"]: row for row in status["targets"]}
    assert rows["no-weights"]["errors"] == 1 and rows["good"]["errors"] == 0


def test_a_local_replica_answers_and_streams_through_a_route(web, key, engine_worker, tiny_llm_path):
    tiny = Engine.objects.create(name="tiny", kind="llm", model=tiny_llm_path, config={"max_new_tokens": 16})
    route("local", tiny)
    whole = ask(client(web[0], key), model="local", max_tokens=6, temperature=0)
    assert whole.model == "local" and whole.usage.completion_tokens <= 6
    pieces = [chunk.choices[0].delta.content or "" for chunk in
              ask(client(web[1], key), model="local", max_tokens=6, temperature=0, stream=True) if chunk.choices]
    assert "".join(pieces) == whole.choices[0].message.content
    status = httpx.get(f"{web[0]}/api/routes/local/status/", headers={"Authorization": f"Bearer {staff_key()}"}).json()
    assert status["targets"][0]["cached_on"] == [engine_worker.hostname]
    assert status["targets"][0]["requests"] == 2


def test_a_canary_checks_a_local_replica_only_once_its_model_is_loaded(web, key, engine_worker, tiny_llm_path):
    from asgiref.sync import async_to_sync

    from engines.serving.canary import check_local_targets

    tiny = Engine.objects.create(name="tiny-canary", kind="llm", model=tiny_llm_path, config={"max_new_tokens": 8})
    route("local", tiny)
    assert async_to_sync(check_local_targets)() == []  # not in any cache: a check must not load it
    ask(client(web[0], key), model="local", max_tokens=2)
    [(target, result)] = async_to_sync(check_local_targets)()
    assert target == "tiny-canary" and result["ok"] and result["state"] == health.HEALTHY
    assert health.HealthMonitor("tiny-canary").snapshot()["checks"][0]["ok"] is True


def test_a_local_replicas_half_open_breaker_closes_on_its_trial_successes(web, key, engine_worker, tiny_llm_path):
    tiny = Engine.objects.create(name="tiny-trial", kind="llm", model=tiny_llm_path, config={"max_new_tokens": 8})
    route("local", tiny)
    breaker_ = breaker.CircuitBreaker("tiny-trial")
    for _ in range(3):  # BLAZE_BREAKER_FAILURE_THRESHOLD
        breaker_.record_failure()
    assert breaker_.state() == breaker.OPEN
    time.sleep(2.2)  # BLAZE_BREAKER_RESET_SECONDS
    for _ in range(2):  # BLAZE_BREAKER_SUCCESS_THRESHOLD trials, each with its permit
        assert ask(client(web[0], key), model="local", max_tokens=2).choices
    assert breaker_.state() == breaker.CLOSED
