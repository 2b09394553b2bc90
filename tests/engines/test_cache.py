"""The model cache's policy, with runtimes that only report sizes (real models: tests/engines/runtimes)."""

import threading

import pytest

from engines.contract import EngineSpec
from engines.worker.cache import CacheRefusal, ModelCache

MiB = 1024 * 1024


class SizedRuntime:
    loads = []

    def __init__(self, spec, device):
        self.spec = spec
        self.size = spec.config["size"]

    def estimate_bytes(self):
        return self.size

    def load(self):
        SizedRuntime.loads.append(self.spec.name)

    def loaded_bytes(self):
        return self.spec.config.get("measured", self.size)

    def unload(self):
        pass

    def run_batch(self, requests, emit):
        return requests


def spec(name, size, **extra):
    return EngineSpec(name=name, kind="llm", model="m", config={"size": size * MiB, **extra})


@pytest.fixture
def cache():
    SizedRuntime.loads = []
    cache = ModelCache(budget_bytes=100 * MiB, device="cpu", runtime_factory=SizedRuntime)
    yield cache
    cache.clear()


def names(cache):
    return [entry["engine"] for entry in cache.snapshot()]


def test_least_recently_used_model_is_evicted_first(cache):
    cache.get(spec("a", 40)), cache.get(spec("b", 40))
    cache.get(spec("a", 40))  # a is now more recent than b
    cache.get(spec("c", 40))
    assert names(cache) == ["c", "a"]


def test_eviction_frees_as_many_models_as_needed(cache):
    for name in "abcd":
        cache.get(spec(name, 25))
    cache.get(spec("big", 70))
    assert names(cache) == ["big", "d"]
    assert cache.used_bytes == 95 * MiB


def test_a_model_larger_than_the_budget_is_refused_and_nothing_is_evicted(cache):
    cache.get(spec("a", 40))
    with pytest.raises(CacheRefusal, match="can never be loaded"):
        cache.get(spec("huge", 101))
    assert names(cache) == ["a"]


def test_measured_size_over_the_estimate_evicts_others_not_the_new_model(cache):
    cache.get(spec("a", 50))
    cache.get(spec("b", 30, measured=60 * MiB))
    assert names(cache) == ["b"]


def test_hits_and_last_use_are_counted(cache):
    cache.get(spec("a", 10)), cache.get(spec("a", 10)), cache.get(spec("a", 10))
    [entry] = cache.snapshot()
    assert entry["hits"] == 2 and entry["bytes"] == 10 * MiB and entry["last_used"] >= entry["loaded_at"]


def test_concurrent_requests_for_one_model_load_it_once(cache):
    threads = [threading.Thread(target=cache.get, args=(spec("a", 10),)) for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert SizedRuntime.loads == ["a"]


def test_changed_engine_settings_reload_the_model(cache):
    cache.get(spec("a", 10))
    cache.get(spec("a", 10, max_batch_size=4))
    assert SizedRuntime.loads == ["a", "a"]
    assert cache.peek("a").batcher.max_batch_size == 4


def test_unload_drops_the_model(cache):
    cache.get(spec("a", 10))
    assert cache.unload("a") is True and cache.unload("a") is False
    assert names(cache) == [] and cache.used_bytes == 0


def test_two_models_asked_for_at_once_load_one_after_the_other_estimates_included():
    import threading
    import time

    loading, most = [], []

    def busy(name):
        loading.append(name)
        most.append(len(loading))
        time.sleep(0.1)
        loading.remove(name)

    class SlowLoad(SizedRuntime):
        def estimate_bytes(self):  # an LLM's imports transformers (and so accelerate), as a pipeline's load does
            busy(self.spec.name)
            return super().estimate_bytes()

        def load(self):
            busy(self.spec.name)

    cache = ModelCache(budget_bytes=100 * MiB, device="cpu", runtime_factory=SlowLoad)
    threads = [threading.Thread(target=cache.get, args=(spec(name, 10),)) for name in ("left", "right")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert max(most) == 1 and {entry["engine"] for entry in cache.snapshot()} == {"left", "right"}
    cache.clear()


def test_a_model_idle_past_its_keep_alive_is_unloaded_and_the_next_request_loads_it_again(cache):
    quick = EngineSpec(name="quick", kind="llm", model="m", config={"size": MiB}, keep_alive=30)
    forever = EngineSpec(name="forever", kind="llm", model="m", config={"size": MiB})
    loaded = cache.get(quick)
    cache.get(forever)
    assert cache.unload_idle(now=loaded.last_used + 29) == []  # not idle long enough
    assert cache.unload_idle(now=loaded.last_used + 3600) == ["quick"]  # no keep_alive: kept however long
    assert names(cache) == ["forever"]
    cache.get(quick)
    assert SizedRuntime.loads == ["quick", "forever", "quick"]


def test_a_keep_alive_change_applies_to_the_loaded_model_without_a_reload(cache):
    loaded = cache.get(EngineSpec(name="e", kind="llm", model="m", config={"size": MiB}))
    cache.get(EngineSpec(name="e", kind="llm", model="m", config={"size": MiB}, keep_alive=5))
    assert SizedRuntime.loads == ["e"]
    assert cache.unload_idle(now=loaded.last_used + 6) == ["e"]


def test_a_model_running_or_with_requests_waiting_is_not_idle(cache):
    entry = cache.get(EngineSpec(name="busy", kind="llm", model="m", config={"size": MiB}, keep_alive=1))
    started, release = threading.Event(), threading.Event()
    entry.batcher.run_batch = lambda requests, emit: started.set() or release.wait(5) and requests
    running = entry.batcher.submit({"n": 1})
    assert started.wait(5)
    try:
        assert cache.unload_idle(now=entry.last_used + 60) == []  # its batch is running
        waiting = entry.batcher.submit({"n": 2})
        assert cache.unload_idle(now=entry.last_used + 60) == []
    finally:
        release.set()
    assert running.result(5) and waiting.result(5)
