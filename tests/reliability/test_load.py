"""A short run of the load bench (bench/load.py --quick): mixed traffic against a live stack, every
request answered whole (each stream read to [DONE] with no error event, each body with what its kind
answers with: the bench's `answer_error`), every kind served, every dashboard viewer fed. The long
soak, with its memory bound, is the bench's own run (docs/benchmarks.md)."""

import json
import subprocess
import sys

import pytest

from tests.servers import ROOT

pytestmark = [pytest.mark.reliability, pytest.mark.slow]


def test_mixed_traffic_is_all_answered():
    done = subprocess.run([sys.executable, "bench/load.py", "--quick", "--seconds", "10", "--warm-up", "3"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    for kind, figures in report["kinds"].items():
        assert figures["errors"] == {} and figures["requests"] > 0, (kind, figures)
    assert min(report["dashboard"]["snapshots_per_viewer"]) >= 5  # a snapshot every half second, for 10 s
    assert set(report["memory_growth"]) == {"worker", "web", "live_feed"}
