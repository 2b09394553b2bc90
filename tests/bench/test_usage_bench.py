"""A short run of bench/usage.py: both daphnes answer every measured request, the one with usage on
counts each against the key's budget, and the reads over the stored records answer. The figures
are the bench's full run (docs/benchmarks.md)."""

import json
import subprocess
import sys

import pytest

from tests.servers import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lines():
    done = subprocess.run([sys.executable, "bench/usage.py", "--requests", "60", "--records", "3000", "--reads", "2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(text) for text in done.stdout.splitlines() if text.startswith("{")]


def test_both_daphnes_answer_and_the_one_with_usage_counts_every_request_against_the_budget(lines):
    rows = {(line["usage"], line["concurrency"]): line for line in lines if line.get("measure") == "latency"}
    assert set(rows) == {("off", 1), ("on", 1), ("off", 32), ("on", 32)}
    assert all(row["requests"] == 60 and row["p50_ms"] > 0 and row["req_s"] > 0 for row in rows.values())
    [summary] = [line for line in lines if line.get("measure") == "summary"]
    assert summary["on_requests"] == 120 and summary["budget_counted"] >= 120
    assert isinstance(summary["added_p50_ms_1_client"], float) and summary["throughput_kept_32_clients"] > 0


def test_the_reads_over_the_stored_records_answer(lines):
    [summary] = [line for line in lines if line.get("measure") == "summary"]
    assert summary["records"] == 3000
    assert set(summary["reads"]) == {"api_by_engine_30_days", "api_by_user_30_days", "page_by_engine_30_days"}
    assert all(read["p50_ms"] > 0 for read in summary["reads"].values())
