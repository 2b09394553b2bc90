"""Cluster metrics (telemetry/cluster.py): every process publishes its own samples through Redis; the
feed and /metrics/prometheus read every live one, label each series with its host and process, drop
a process that stops publishing, and count rates per process so one that appears or is lost does not
move the others'."""

import os
import subprocess
import sys
import time
import uuid

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.parser import text_string_to_metric_families

from core import shared_state
from dashboard import selectors
from dashboard.feed import Feed
from engines.models import Engine
from telemetry import cluster


class Clock:
    def __init__(self):
        self.now = time.time()

    def __call__(self):
        return self.now


class FakeProcess:
    """A registry of its own, published as if it were another process (role:pid differs by role)."""

    def __init__(self, role, host):
        self.role, self.host = role, host
        self.registry = CollectorRegistry()
        self.tokens = Counter("blaze_tokens_generated_total", "t", ["engine"], registry=self.registry)
        self.ttft = Histogram("blaze_time_to_first_token_seconds", "t", ["engine"], registry=self.registry,
                              buckets=(0.1, 1, float("inf")))

    def publish(self, settings):
        settings.BLAZE_HOST_NAME = self.host
        cluster.publish(self.role, self.registry)


@pytest.fixture
def isolated(own_redis_prefix):
    """Only this test's processes publish there."""
    return own_redis_prefix


def test_every_process_series_carries_its_host_and_process_and_sums_add_up(isolated):
    a, b = FakeProcess("worker-a", "host-a"), FakeProcess("worker-b", "host-b")
    a.tokens.labels("chat").inc(5)
    b.tokens.labels("chat").inc(7)
    a.publish(isolated)
    b.publish(isolated)
    isolated.BLAZE_HOST_NAME = "reader"
    text = selectors.prometheus_text().decode()
    found = {(s.labels["host"], s.labels["process"]): s.value
             for family in text_string_to_metric_families(text) for s in family.samples
             if s.name == "blaze_tokens_generated_total" and s.labels.get("engine") == "chat"}
    pid = os.getpid()
    assert found == {("host-a", f"worker-a:{pid}"): 5, ("host-b", f"worker-b:{pid}"): 7}
    assert selectors.registry().get_sample_value("blaze_tokens_generated_total", {"engine": "chat"}) == 12


def test_a_process_that_stops_publishing_drops_out(isolated):
    isolated.BLAZE_WORKER_LOST_SECONDS = 1.0  # each sleep below may overrun by 0.4 s on a loaded machine
    lost, alive = FakeProcess("worker-lost", "host-a"), FakeProcess("worker-alive", "host-b")
    lost.publish(isolated)
    alive.publish(isolated)
    assert {"worker-lost", "worker-alive"} <= {p["process"].split(":")[0] for p in cluster.processes()}
    time.sleep(0.6)
    alive.publish(isolated)
    time.sleep(0.6)  # the lost one's key has lapsed; the alive one published 0.6 s ago
    roles = {p["process"].split(":")[0] for p in cluster.processes()}
    assert "worker-alive" in roles and "worker-lost" not in roles
    index = shared_state.metrics_processes_key()
    assert shared_state.client().zscore(index, f"host-a/worker-lost:{os.getpid()}") is None


def test_the_feed_counts_rates_per_process_so_a_lost_or_new_one_moves_no_other(isolated, db):
    engine, clock = f"e-{uuid.uuid4().hex[:6]}", Clock()
    Engine.objects.create(name=engine, kind="llm", model="/nowhere")
    stays, leaves, joins = (FakeProcess(f"worker-{n}", f"host-{n}") for n in ("stays", "leaves", "joins"))
    stays.tokens.labels(engine).inc(1000)  # counted before the feed's first reading: not a rate
    leaves.tokens.labels(engine).inc(5000)
    for process in (stays, leaves):
        process.publish(isolated)
    feed = Feed(window=10, clock=clock)
    feed.step()
    shared_state.client().delete(shared_state.metrics_process_key(f"host-leaves/worker-leaves:{os.getpid()}"))
    # (its key lapsed: lost)
    stays.tokens.labels(engine).inc(100)
    stays.ttft.labels(engine).observe(0.05)
    joins.tokens.labels(engine).inc(50)
    joins.ttft.labels(engine).observe(0.5)
    stays.publish(isolated)
    joins.publish(isolated)
    clock.now += 10
    snapshot, _ = feed.step()
    [row] = [row for row in snapshot["engines"] if row["name"] == engine]
    # 100 from the process that stayed and 50 from the one that joined, over ten seconds; the 5,000 of
    # the one that was lost neither count nor take anything away.
    assert row["tokens_per_second"] == pytest.approx(15.0, rel=0.01)
    assert 0.05 <= row["ttft_p95_seconds"] <= 1


EXITS_MID_PUBLISH = """
import atexit, os, sys, time
import django
django.setup()
from telemetry import cluster
from core import shared_state
atexit.register(time.sleep, 0.5)  # runs after the withdrawal (atexit is last in, first out)
write = shared_state.client
def slow_client():
    time.sleep(0.4)  # the publisher is between its snapshot and its write when the process ends
    return write()
cluster.start("leaving")
time.sleep(0.2)  # the first publish has happened; the next one is under way
cluster.shared_state.client = slow_client
time.sleep(0.3)
print(f"{cluster.host_name()}/leaving:{os.getpid()}", flush=True)
"""


def test_a_process_that_exits_mid_publish_does_not_come_back(isolated):
    """The withdrawal at exit and the publishing thread take turns: a process that ended in order is
    gone from the cluster at once, not written back by its last publish for BLAZE_WORKER_LOST_SECONDS."""
    from tests.servers import ROOT, server_env

    done = subprocess.run([sys.executable, "-c", EXITS_MID_PUBLISH], cwd=ROOT, capture_output=True, text=True,
                          env=server_env(BLAZE_REDIS_PREFIX=isolated.REDIS_PREFIX, BLAZE_METRICS_PUSH_SECONDS="0.1",
                                         BLAZE_WORKER_LOST_SECONDS="30"), timeout=60)
    assert done.returncode == 0, done.stderr
    member = done.stdout.strip()
    client = shared_state.client()
    assert client.get(shared_state.metrics_process_key(member)) is None
    assert client.zscore(shared_state.metrics_processes_key(), member) is None
