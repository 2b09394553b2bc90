"""A short run of bench/lifecycle.py: each demo engine answers after its model was unloaded (a cold
start) and again while loaded, and the cold start is the slower. The figures are the bench's full
run (docs/benchmarks.md)."""

import json
import subprocess
import sys

import pytest

from tests.servers import ROOT

pytestmark = pytest.mark.slow


def test_each_demo_engine_answers_cold_and_warm_and_cold_is_slower():
    done = subprocess.run([sys.executable, "bench/lifecycle.py", "--quick"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {row["engine"]: row for row in map(json.loads, filter(None, done.stdout.splitlines())) if "engine" in row}
    assert set(rows) == {"smollm2", "minilm"}
    for row in rows.values():
        assert (row["cold_requests"], row["warm_requests"]) == (2, 4)
        assert row["cold_p50_ms"] > row["warm_p50_ms"] > 0
