"""Two web processes, one count: the counters live in Redis."""

import time

import httpx
import pytest
from django.conf import settings

from tests.servers import start_daphne

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_two_web_processes_share_one_limit(live_blaze, make_policy, tmp_path):
    make_policy(scope="ip", endpoint="/api/me", algorithm="sliding_window", limit=4, period_seconds=60)
    second = start_daphne(tmp_path)
    try:
        # A process that already cached the (empty) policy list sees the new one within this time.
        time.sleep(settings.BLAZE_RATELIMIT_POLICY_CACHE_SECONDS)
        statuses = [httpx.get(f"{url}/api/me/", timeout=30).status_code
                    for _ in range(3) for url in (live_blaze, second.url)]
    finally:
        second.stop()
    assert 429 not in statuses[:4]
    assert statuses[4:] == [429, 429]
