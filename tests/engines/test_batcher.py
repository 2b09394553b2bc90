import threading
import time

import pytest

from engines.worker.batcher import DynamicBatcher


def echo_batch(requests, emit):
    for index, request in enumerate(requests):
        emit(index, {"type": "token", "text": f"<{request}>"})
    return [f"result of {request}" for request in requests]


def test_concurrent_requests_share_one_batch_and_each_gets_its_own_result():
    batcher = DynamicBatcher(echo_batch, max_batch_size=8, max_wait_ms=200)
    futures = [batcher.submit(f"r{i}") for i in range(5)]
    assert [f.result(timeout=5) for f in futures] == [f"result of r{i}" for i in range(5)]
    assert list(batcher.batch_sizes) == [5]
    batcher.close()


def test_a_full_batch_runs_without_waiting_for_the_deadline():
    batcher = DynamicBatcher(echo_batch, max_batch_size=3, max_wait_ms=10_000)
    started = time.monotonic()
    futures = [batcher.submit(i) for i in range(3)]
    [f.result(timeout=5) for f in futures]
    assert time.monotonic() - started < 2
    batcher.close()


def test_batches_never_exceed_max_batch_size():
    batcher = DynamicBatcher(echo_batch, max_batch_size=4, max_wait_ms=100)
    futures = [batcher.submit(i) for i in range(10)]
    assert [f.result(timeout=5) for f in futures] == [f"result of {i}" for i in range(10)]
    assert max(batcher.batch_sizes) <= 4 and sum(batcher.batch_sizes) == 10
    batcher.close()


def test_a_lone_request_runs_after_max_wait():
    batcher = DynamicBatcher(echo_batch, max_batch_size=8, max_wait_ms=50)
    started = time.monotonic()
    assert batcher.submit("alone").result(timeout=5) == "result of alone"
    assert 0.04 <= time.monotonic() - started < 1
    batcher.close()


def test_each_caller_receives_only_its_own_events():
    seen = {name: [] for name in ("a", "b")}
    batcher = DynamicBatcher(echo_batch, max_batch_size=8, max_wait_ms=100)
    futures = [batcher.submit(name, on_event=seen[name].append) for name in seen]
    [f.result(timeout=5) for f in futures]
    assert seen == {"a": [{"type": "token", "text": "<a>"}], "b": [{"type": "token", "text": "<b>"}]}
    batcher.close()


def test_only_requests_with_the_same_key_share_a_batch():
    shapes = []

    def run(requests, emit):
        shapes.append(sorted({r["size"] for r in requests}))
        return [r["size"] for r in requests]

    batcher = DynamicBatcher(run, max_batch_size=8, max_wait_ms=100, batch_key=lambda r: r["size"])
    futures = [batcher.submit({"size": size}) for size in (64, 128, 64, 128, 64)]
    assert [f.result(timeout=5) for f in futures] == [64, 128, 64, 128, 64]
    assert shapes == [[64], [128]]
    batcher.close()


def test_a_failing_batch_fails_every_caller_with_the_reason():
    def boom(requests, emit):
        raise ValueError("out of memory")

    batcher = DynamicBatcher(boom, max_batch_size=8, max_wait_ms=50)
    futures = [batcher.submit(i) for i in range(3)]
    for future in futures:
        with pytest.raises(ValueError, match="out of memory"):
            future.result(timeout=5)
    assert batcher.submit(1).exception(timeout=5) is not None  # and it keeps serving
    batcher.close()


def test_requests_arriving_during_a_run_form_the_next_batch():
    release = threading.Event()

    def slow(requests, emit):
        release.wait(5)
        return list(requests)

    batcher = DynamicBatcher(slow, max_batch_size=8, max_wait_ms=10)
    first = batcher.submit("first")
    time.sleep(0.1)
    later = [batcher.submit(i) for i in range(4)]
    release.set()
    assert first.result(timeout=5) == "first" and [f.result(timeout=5) for f in later] == [0, 1, 2, 3]
    assert list(batcher.batch_sizes) == [1, 4]
    batcher.close()


def test_close_fails_waiting_requests_instead_of_leaving_them_hanging():
    batcher = DynamicBatcher(echo_batch, max_batch_size=8, max_wait_ms=10)
    batcher.close()
    with pytest.raises(RuntimeError, match="unloaded"):
        batcher.submit("late")


def test_a_burst_spread_over_time_still_forms_one_batch():
    batcher = DynamicBatcher(echo_batch, max_batch_size=16, max_wait_ms=80)
    futures = []
    for i in range(6):  # 30 ms apart: each arrival keeps the window open
        futures.append(batcher.submit(i))
        time.sleep(0.03)
    [f.result(timeout=5) for f in futures]
    assert list(batcher.batch_sizes) == [6]
    batcher.close()


def test_the_window_never_stays_open_longer_than_its_cap():
    from engines.contract import WINDOW_WAITS

    batcher = DynamicBatcher(echo_batch, max_batch_size=1000, max_wait_ms=20)
    started, futures = time.monotonic(), []
    while time.monotonic() - started < 20 * WINDOW_WAITS / 1000 * 3:
        futures.append(batcher.submit(len(futures)))
        time.sleep(0.005)
    [f.result(timeout=5) for f in futures]
    assert len(batcher.batch_sizes) >= 2  # a steady stream is cut at the cap, not held forever
    batcher.close()


def texts_batch(requests, emit):
    return [len(request) for request in requests]


def test_a_request_counts_as_its_rows_so_a_full_one_runs_at_once():
    batcher = DynamicBatcher(texts_batch, max_batch_size=4, max_wait_ms=10_000, batch_size=len)
    started = time.monotonic()
    assert batcher.submit(["a", "b", "c", "d"]).result(timeout=5) == 4  # 4 texts fill a batch of 4
    assert time.monotonic() - started < 2
    batcher.close()


def test_a_request_that_would_overfill_the_batch_starts_the_next_one():
    seen = []

    def run(requests, emit):
        seen.append([len(request) for request in requests])
        return [len(request) for request in requests]

    batcher = DynamicBatcher(run, max_batch_size=4, max_wait_ms=100, batch_size=len)
    futures = [batcher.submit(texts) for texts in (["a", "b"], ["c"], ["d", "e"], ["f"])]
    assert [f.result(timeout=5) for f in futures] == [2, 1, 2, 1]
    assert seen == [[2, 1], [2, 1]]
    batcher.close()


def test_a_gathered_group_is_one_batch_and_does_not_wait_for_more():
    batcher = DynamicBatcher(echo_batch, max_batch_size=8, max_wait_ms=10_000)
    started = time.monotonic()
    futures = batcher.submit_group(["a", "b", "c"])
    assert [f.result(timeout=5) for f in futures] == ["result of a", "result of b", "result of c"]
    assert time.monotonic() - started < 2  # its gatherer already waited: not another 10 s
    assert list(batcher.batch_sizes) == [3]
    batcher.close()
