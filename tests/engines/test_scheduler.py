"""Continuous (iteration-level) scheduling on a tiny random GPT-2 (CPU, fp32): rows join a running batch
and leave it at once, sample as they would alone, and are admitted by priority with ageing."""

import threading
import time

import pytest

from core import errors
from engines.contract import EngineSpec
from engines.worker.batcher import DynamicBatcher
from engines.worker.runtimes.llm import LlmRuntime
from engines.worker.scheduler import ContinuousScheduler


@pytest.fixture(scope="module")
def llm(tiny_llm_path):
    runtime = LlmRuntime(EngineSpec(name="tiny", kind="llm", model=tiny_llm_path, config={"max_new_tokens": 250}),
                         "cpu")
    runtime.load()
    runtime.eos_ids = lambda: set()  # random weights: only the limits end a row, so lengths are the test's
    return runtime


@pytest.fixture
def scheduler(llm):
    made = []

    def make(**options):
        admitted = []
        options = {"max_batch_size": 8, "max_wait_ms": 5, **options}
        made.append(ContinuousScheduler(llm.decoder(), on_admit=lambda request, waited, rows: admitted.append(request),
                                        **options))
        made[-1].admitted = admitted
        return made[-1]

    yield make
    for each in made:
        each.close()


def request(prompt="the cat sat", **fields):
    return {"prompt": prompt, "messages": None, "max_tokens": 12, "temperature": 0.0, "top_p": 1.0, "stop": [],
            "seed": None, **fields}


class Stream:
    """A request's events, each with the time it came."""

    def __init__(self, gate=None):
        self.times, self.texts, self.gate = [], [], gate

    def __call__(self, event):
        self.times.append(time.monotonic())
        self.texts.append(event["text"])
        if self.gate is not None:
            self.gate.wait(10)  # holds the scheduler's thread: the batch cannot move on meanwhile


def alone(llm, one):
    return llm.run_batch([one], lambda index, event: None)[0]


PROMPTS = [("the cat", 3), ("a quick red dog ran under the table", 12), ("paris", 8), ("model engine batch", 5)]


def test_greedy_rows_in_a_running_batch_answer_as_a_single_request_does(llm, scheduler):
    runner = scheduler()
    futures = [runner.submit(request(prompt, max_tokens=limit)) for prompt, limit in PROMPTS]
    results = [future.result(timeout=30) for future in futures]
    # Each result carries the worker's timings (the contract's `queue_seconds`, `batch_size` and
    # `worker_seconds`) ...
    assert all(result.pop("queue_seconds") >= 0 and 1 <= result.pop("batch_size") <= len(PROMPTS)
               and result.pop("worker_seconds") > 0 for result in results)
    # ... and otherwise is what the request alone gets.
    assert results == [alone(llm, request(prompt, max_tokens=limit)) for prompt, limit in PROMPTS]
    assert [result["completion_tokens"] for result in results] == [3, 12, 8, 5]


def test_a_seeded_row_samples_the_same_text_alone_in_a_batch_and_through_generate(llm, scheduler):
    seeded = request(temperature=1.0, top_p=0.9, seed=7, max_tokens=30)
    runner = scheduler()
    by_itself = runner.submit(seeded).result(timeout=30)["text"]
    others = [runner.submit(request(prompt, max_tokens=limit, temperature=0.8, seed=index))
              for index, (prompt, limit) in enumerate(PROMPTS)]
    in_a_batch = runner.submit(seeded)
    assert in_a_batch.result(timeout=30)["text"] == by_itself == alone(llm, seeded)["text"]
    assert all(future.result(timeout=30)["completion_tokens"] for future in others)
    assert runner.submit({**seeded, "seed": 8}).result(timeout=30)["text"] != by_itself


def test_a_request_arriving_mid_generation_gets_its_first_token_before_the_running_batch_ends(llm, scheduler):
    runner = scheduler()
    long, short = Stream(), Stream()
    running = runner.submit(request("a long answer", max_tokens=200), on_event=long)
    while len(long.times) < 5:
        time.sleep(0.001)
    late = runner.submit(request("a short one", max_tokens=5), on_event=short)
    late.result(timeout=30)
    running.result(timeout=30)
    assert short.times[0] < long.times[-1]  # not after the whole running batch
    assert sum(1 for at in long.times if at < short.times[0]) < 100  # it joined within a few steps
    assert late.result()["completion_tokens"] == 5 and running.result()["completion_tokens"] == 200

    # The dynamic batcher, for contrast: the newcomer waits for the batch that was running.
    batcher = DynamicBatcher(llm.run_batch, max_batch_size=8, max_wait_ms=5)
    try:
        long, short = Stream(), Stream()
        running = batcher.submit(request("a long answer", max_tokens=200), on_event=lambda event: long(event))
        while len(long.times) < 5:
            time.sleep(0.001)
        batcher.submit(request("a short one", max_tokens=5), on_event=lambda event: short(event)).result(timeout=30)
        assert short.times[0] > long.times[-1]
    finally:
        batcher.close()


def test_a_finished_row_leaves_the_batch_at_once(scheduler):
    runner = scheduler()
    futures = [runner.submit(request(prompt, max_tokens=limit)) for prompt, limit in PROMPTS]
    for future in futures:
        future.result(timeout=30)
    sizes = list(runner.step_sizes)
    assert sizes == sorted(sizes, reverse=True) and sizes[0] == 4 and sizes[-1] == 1
    assert len(sizes) == 11  # the longest row's 12 tokens: its first from the prefill, then a step each


def test_a_cancelled_row_stops_decoding_and_frees_its_slot(scheduler):
    runner = scheduler(max_batch_size=1)
    given_up, waiting = Stream(), Stream()
    stopped = threading.Event()
    first = runner.submit(request("a long answer", max_tokens=250, cancelled=stopped.is_set), on_event=given_up)
    second = runner.submit(request("the next one", max_tokens=6), on_event=waiting)
    while len(given_up.times) < 3:
        time.sleep(0.001)
    stopped.set()
    cancelled_at = time.monotonic()
    assert first.result(timeout=30)["finish_reason"] == "cancelled"
    assert second.result(timeout=30)["completion_tokens"] == 6
    assert waiting.times[0] > cancelled_at  # it had to wait for the slot: there was one
    assert len(given_up.times) < 30  # the row stopped within a step or two, not at its 250 tokens


def test_priorities_order_admission(scheduler):
    runner = scheduler(max_batch_size=1)
    gate = threading.Event()
    blocking = runner.submit(request("holds the slot", max_tokens=2), on_event=Stream(gate))
    while not runner.admitted:
        time.sleep(0.001)
    futures = [runner.submit(request(name, max_tokens=1, priority=priority))
               for name, priority in (("low", 0), ("middle", 4), ("high", 9), ("middle again", 4))]
    gate.set()
    blocking.result(timeout=30)
    for future in futures:
        future.result(timeout=30)
    assert [admitted["prompt"] for admitted in runner.admitted] == [
        "holds the slot", "high", "middle", "middle again", "low"]


def test_ageing_lets_a_long_waiting_low_priority_request_go_first(scheduler, settings):
    settings.BLAZE_PRIORITY_AGEING_SECONDS = 0.05  # one level per 50 ms waited
    runner = scheduler(max_batch_size=1)
    gate = threading.Event()
    blocking = runner.submit(request("holds the slot", max_tokens=2), on_event=Stream(gate))
    while not runner.admitted:
        time.sleep(0.001)
    low = runner.submit(request("low, waiting long", max_tokens=1, priority=0))
    time.sleep(0.6)  # 12 levels of ageing: above a fresh 9
    high = runner.submit(request("high, just arrived", max_tokens=1, priority=9))
    gate.set()
    for future in (blocking, low, high):
        future.result(timeout=30)
    assert [admitted["prompt"] for admitted in runner.admitted][1:] == ["low, waiting long", "high, just arrived"]


def test_a_request_whose_deadline_passes_while_it_waits_is_not_run(scheduler):
    runner = scheduler(max_batch_size=1)
    gate = threading.Event()
    blocking = runner.submit(request("holds the slot", max_tokens=2), on_event=Stream(gate))
    late = runner.submit(request("too late", max_tokens=4, deadline=time.time() + 0.1))
    time.sleep(0.3)
    gate.set()
    blocking.result(timeout=30)
    with pytest.raises(errors.TimedOut, match="deadline passed"):
        late.result(timeout=30)
    assert [admitted["prompt"] for admitted in runner.admitted] == ["holds the slot"]


def test_a_prompt_the_model_cannot_take_fails_only_its_own_request(scheduler):
    runner = scheduler()
    too_long = runner.submit(request("the cat sat " * 200))
    fine = runner.submit(request(max_tokens=4))
    assert too_long.result(timeout=30)["param"] == "prompt"
    assert fine.result(timeout=30)["completion_tokens"] == 4


def test_stop_strings_cut_a_row_and_deltas_add_up_to_its_text(llm, scheduler):
    runner = scheduler()
    whole = runner.submit(request("the cat sat", max_tokens=20)).result(timeout=30)["text"]
    stop = whole[6:9]
    stream = Stream()
    cut = runner.submit(request("the cat sat", max_tokens=20, stop=[stop]), on_event=stream).result(timeout=30)
    assert cut["finish_reason"] == "stop" and cut["text"] == whole[: whole.find(stop)]
    assert "".join(stream.texts) == cut["text"]
