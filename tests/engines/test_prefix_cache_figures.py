"""What a worker reports of its LLMs' prefix caches: a request's `cached_tokens` in its result (n
choices share their prompt's), the Prometheus counters of hits and tokens saved, and each loaded
model's cache in the heartbeat, which the live feed carries to the overview. An in-process engine host
with a runtime that reuses shared word prefixes the way a prefix cache reuses shared token prefixes
(the real caches: tests/engines/runtimes, and test_serving_prefix_cache.py end to end)."""

import threading

import orjson
import pytest

from core import shared_state
from dashboard.feed import Feed
from engines import contract
from engines.contract import EngineSpec
from engines.worker.host import EngineHost
from tests.engines.test_cache import SizedRuntime
from tests.telemetry.test_metrics import samples, value

pytestmark = pytest.mark.django_db(transaction=True)
MiB = 1024 * 1024
WORD_BYTES, BUDGET = 1000, 32  # what the runtime counts a kept word as, and how many it keeps


class PrefixRuntime(SizedRuntime):
    """Each word a token. A prompt's start shared with an earlier prompt (all but its last word at
    most) counts as cached, as a prefix cache supplies it; prompts are kept while they fit BUDGET words."""

    def __init__(self, spec, device):
        super().__init__(spec, device)
        self.kept, self.hits, self.misses, self.saved = [], 0, 0, 0
        self._lock = threading.Lock()

    def run_batch(self, requests, emit):
        return [self._row(request) for request in requests]

    def _row(self, request):
        words = request["prompt"].split()
        with self._lock:
            cached = max((shared(kept, words[:-1]) for kept in self.kept), default=0)
            self.hits, self.misses = self.hits + (cached > 0), self.misses + (cached == 0)
            self.saved += cached
            self.kept = [kept for kept in self.kept if shared(kept, words) < len(kept)] + [words]
            while sum(map(len, self.kept)) > BUDGET:
                self.kept.pop(0)
        return {"text": "ok", "finish_reason": "stop", "prompt_tokens": len(words), "cached_tokens": cached,
                "completion_tokens": 1}

    def prefix_cache_stats(self):
        with self._lock:
            kept = sum(map(len, self.kept))
            return {"entries": len(self.kept), "bytes": kept * WORD_BYTES, "budget_bytes": BUDGET * WORD_BYTES,
                    "hits": self.hits, "misses": self.misses, "saved_tokens": self.saved}


def shared(a, b):
    count = 0
    for x, y in zip(a, b):
        if x != y:
            break
        count += 1
    return count


@pytest.fixture
def host():
    host = EngineHost("prefix@test")
    host.cache.runtime_factory = PrefixRuntime
    yield host
    host.stop()  # its heartbeat leaves Redis with it: no other test's feed sees this worker


SPEC = EngineSpec(name="reuse", kind="llm", model="m", config={"size": MiB}).as_dict()
SYSTEM = "you are a terse assistant who answers in one word"


def answer(host, request_id, prompt, **payload):
    host.infer(request_id, SPEC, {"prompt": prompt, **payload})
    stream = shared_state.client().xrange(contract.response_stream(request_id))
    [done] = [event for event in (orjson.loads(fields["event"]) for _, fields in stream) if event["type"] == "done"]
    return done["result"]


def counters():
    from dashboard import selectors

    parsed = samples(selectors.prometheus_text().decode())
    return (value(parsed, "blaze_prefix_cache_hits_total", engine="reuse"),
            value(parsed, "blaze_prefix_cache_tokens_saved_total", engine="reuse"))


def test_a_shared_prompt_start_is_reported_cached_and_counted(host):
    hits, saved = counters()
    first = answer(host, "first", f"{SYSTEM} hello")
    assert (first["prompt_tokens"], first["cached_tokens"]) == (11, 0)
    assert counters() == (hits, saved)  # a miss moves neither counter
    second = answer(host, "second", f"{SYSTEM} goodbye")
    assert (second["prompt_tokens"], second["cached_tokens"]) == (11, 10)
    assert counters() == (hits + 1, saved + 10)


def test_n_choices_report_their_shared_prompt_s_cached_tokens_once(host):
    answer(host, "seed", f"{SYSTEM} hello")
    hits, saved = counters()
    result = answer(host, "choices", f"{SYSTEM} again", choices=3)
    assert len(result["choices"]) == 3 and result["completion_tokens"] == 3
    assert (result["prompt_tokens"], result["cached_tokens"]) == (11, 10)
    assert counters() == (hits + 1, saved + 10)  # one request, one hit: its rows share one prompt


def test_the_heartbeat_carries_each_model_s_prefix_cache_to_the_live_feed(host):
    answer(host, "first", f"{SYSTEM} hello")
    answer(host, "second", f"{SYSTEM} goodbye")
    host.beat()
    snapshot, _ = Feed().step()
    [worker] = [w for w in snapshot["workers"] if w["id"] == "prefix@test"]
    [model] = worker["models"]
    assert model["engine"] == "reuse"
    assert model["prefix_cache"] == {"entries": 2, "bytes": 22 * WORD_BYTES, "budget_bytes": BUDGET * WORD_BYTES,
                                     "hits": 1, "misses": 1, "saved_tokens": 10}


def test_a_runtime_without_a_prefix_cache_reports_none(host):
    host.cache.runtime_factory = SizedRuntime
    host.model(EngineSpec(name="plain", kind="llm", model="m", config={"size": MiB}))
    host.beat()
    [worker] = [w for w in Feed().step()[0]["workers"] if w["id"] == "prefix@test"]
    assert worker["models"] == [{"engine": "plain", "bytes": MiB, "prefix_cache": None}]
