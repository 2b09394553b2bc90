"""Short runs of bench/lifecycle.py's two halves: each demo engine answers after its model was unloaded
(a cold start) and again while loaded, and the cold start is the slower; 8 rows over 4 LoRA adapters,
the same rows on the base alone and on each adapter's merged model all decode and are compared. The
figures are the bench's full run (docs/benchmarks.md)."""

import json
import subprocess
import sys

import pytest

from tests.servers import ROOT

pytestmark = pytest.mark.slow


def test_each_demo_engine_answers_cold_and_warm_and_cold_is_slower():
    done = subprocess.run([sys.executable, "bench/lifecycle.py", "--quick", "--only", "cold"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {row["engine"]: row for row in map(json.loads, filter(None, done.stdout.splitlines())) if "engine" in row}
    assert set(rows) == {"smollm2", "minilm"}
    for row in rows.values():
        assert (row["cold_requests"], row["warm_requests"]) == (2, 4)
        assert row["cold_p50_ms"] > row["warm_p50_ms"] > 0


def test_rows_over_several_adapters_the_base_and_merged_models_each_decode_and_are_compared():
    done = subprocess.run([sys.executable, "bench/lifecycle.py", "--quick", "--only", "lora"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    ways = {row["way"]: row for row in rows if row.get("measure") == "lora"}
    assert set(ways) == {"base", "adapters", "merged", "peft_mixed"}
    assert all(row["rows"] == 8 and row["tok_s_median"] > 0 for row in ways.values())
    [summary] = [row for row in rows if row.get("measure") == "lora_summary"]
    assert summary["adapters_vs_base"] > 0 and summary["adapters_vs_merged"] > 0
    assert 0 < summary["adapter_bytes"] < summary["merged_models_bytes"]
