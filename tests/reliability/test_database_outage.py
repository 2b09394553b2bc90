"""The database stops answering during traffic: pages and the native API fail fast with a 503 that
names it, /v1 answers a key and a model it has seen from what it cached (its rate limits still
counted), and all recover without a restart when it returns. Its own daphne reaches PostgreSQL
through a TCP proxy the test cuts (connections refused) or holds (accepted, never answered: a host
that hangs); the suite's stay connected."""

import time

import httpx
import pytest
from django.db import connection

from accounts import services as account_services
from accounts.audit import Actor
from engines import services
from ratelimits import services as ratelimit_services
from tests.conftest import PASSWORD, make_user
from tests.servers import TcpProxy, database_url, start_daphne, wait_for
from tests.upstream import OpenAIUpstream

pytestmark = [pytest.mark.reliability, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def web_behind_proxy(tmp_path):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (DATABASE_URL): an SQLite file cannot be cut off")
    proxy = TcpProxy(int(connection.settings_dict["PORT"] or 5432))
    url = database_url().replace(f":{connection.settings_dict['PORT'] or 5432}/", f":{proxy.port}/")
    # Cached lookups and rate-limit policies lapse within a second, so the outage below outlives them.
    web = start_daphne(tmp_path, DATABASE_URL=url, BLAZE_LOOKUP_CACHE_SECONDS="1",
                       BLAZE_RATELIMIT_POLICY_CACHE_SECONDS="1")
    yield web, proxy
    web.stop()
    proxy.cut()


@pytest.mark.e2e  # signs in through a server process: the real password hasher (tests/conftest.py)
@pytest.mark.parametrize("outage", ["refused", "hangs"])
def test_requests_fail_fast_while_the_database_is_away_and_recover_when_it_returns(web_behind_proxy, outage):
    web, proxy = web_behind_proxy
    upstream = OpenAIUpstream()
    try:
        services.engine_create(actor=Actor.system("test"), name="far", kind="llm", backend="remote", model="up",
                               base_url=upstream.base_url("ok"))
        user = make_user("vera", "viewer")
        _, raw = account_services.api_key_create(actor=Actor.system("test"), user=user, name="app",
                                                 scopes=["inference", "read"])
        key = {"Authorization": f"Bearer {raw}"}
        # A limit per key on /v1: counted while the database is away, from the policies read before it left.
        ratelimit_services.policy_create(actor=Actor.system("test"), name="per key", scope="api_key",
                                         endpoint="/v1/", algorithm="fixed_window", limit=100, period_seconds=60)
        browser = httpx.Client(base_url=web.url, timeout=30)
        browser.get("/login/")
        signed_in = browser.post("/login/", data={"username": "vera", "password": PASSWORD,
                                                  "csrfmiddlewaretoken": browser.cookies["csrftoken"]})
        assert signed_in.status_code == 302, signed_in.text[-1500:]

        def calls():
            started = time.monotonic()
            answers = {
                "page": browser.get("/engines/"),
                "api": httpx.get(f"{web.url}/api/engines/", headers=key, timeout=30),
                "v1": httpx.post(f"{web.url}/v1/chat/completions", headers=key, timeout=30,
                                 json={"model": "far", "messages": [{"role": "user", "content": "hi"}]}),
            }
            return answers, time.monotonic() - started

        before, _ = calls()
        assert {name: r.status_code for name, r in before.items()} == {"page": 200, "api": 200, "v1": 200}

        if outage == "refused":
            proxy.cut()
        else:
            proxy.hold()
        time.sleep(2)  # past every cache's lifetime: what /v1 answers from must outlive it
        during, seconds = calls()
        # Three requests, none waiting on a database that is not there: a host that hangs costs one
        # connection attempt (connect_timeout, 3 s), after which the process does not ask for a while.
        assert seconds < 6
        assert during["page"].status_code == 503 and "database does not answer" in during["page"].text
        assert during["api"].status_code == 503
        assert during["api"].json()["error"] == "The database does not answer; try again in a few seconds."
        # /v1 answers from the key and plan it cached before the cut (core/lookups.py).
        assert during["v1"].status_code == 200, during["v1"].text
        assert during["v1"].json()["choices"][0]["message"]["content"] == "Hello from upstream."
        assert int(during["v1"].headers["X-RateLimit-Remaining"]) < int(before["v1"].headers["X-RateLimit-Remaining"])
        assert all(r.status_code != 503 or r.headers["Retry-After"] == "5" for r in during.values())

        proxy.restore()
        wait_for(lambda: calls()[0]["api"].status_code == 200, 20, "the API back after the database returns")
        after, _ = calls()
        assert {name: r.status_code for name, r in after.items()} == {"page": 200, "api": 200, "v1": 200}
    finally:
        upstream.stop()
