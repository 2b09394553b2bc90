"""A short run of the cluster bench (bench/cluster.py --quick): every dashboard sees every change while
simulated processes publish their metrics, and both ways of gathering them are measured. The figures
are the bench's own run (docs/benchmarks.md)."""

import json
import subprocess
import sys

import pytest

from tests.servers import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lines():
    done = subprocess.run([sys.executable, "bench/cluster.py", "--quick"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(text) for text in done.stdout.splitlines() if text.startswith("{")]


def test_every_dashboard_sees_every_change_while_processes_publish(lines):
    [feed] = [line for line in lines if line.get("phase") == "feed"]
    assert feed["processes"] == 3 and feed["missed"] == 0 and feed["received"] == 5 * 3
    assert 0 < feed["delay_p99_s"] < 5 and feed["feed_cpu_ms_per_interval"] > 0


def test_both_ways_of_gathering_the_metrics_are_measured(lines):
    [gather] = [line for line in lines if line.get("phase") == "gather"]
    assert gather["push_cpu_ms"] > 0 and gather["scrape_cpu_ms"] > 0 and gather["snapshot_bytes"] > 1000
    [summary] = [line for line in lines if line.get("summary")]
    assert summary["delay_p99_s"] == {"3": feed_delay(lines)}


def feed_delay(lines):
    return next(line["delay_p99_s"] for line in lines if line.get("phase") == "feed")
