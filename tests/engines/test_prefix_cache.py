"""Prefix caching: `PrefixCache` on its own (longest match, LRU under a byte budget), and the transformers
decoder's use of it on tiny random models (GPT-2, and a Llama for rotary positions and grouped KV heads):
a leaving row's KV is kept, a prompt sharing its start computes only the rest, and greedy text is the same
with the cache on and off."""

import pytest
import torch

from engines.contract import PREFIX_CACHE_MB, EngineSpec
from engines.worker.runtimes.llm import LlmRuntime
from engines.worker.runtimes.prefix import PrefixCache, prefix_cache_bytes
from engines.worker.scheduler import ContinuousScheduler

# -- PrefixCache ---------------------------------------------------------------------------------------


def ids(*spans):
    """Token ids from (start, stop) ranges, joined: ids((0, 20), (100, 105)) is 0..19 then 100..104."""
    return [token for start, stop in spans for token in range(start, stop)]


def test_match_finds_the_longest_shared_start_of_any_entry():
    cache = PrefixCache(10_000, min_tokens=4)
    cache.add(ids((0, 10)), "ten", 10)
    cache.add(ids((0, 6), (50, 70)), "six then others", 10)
    cache.add(ids((0, 8), (90, 95)), "eight then others", 10)
    entry, length = cache.match(ids((0, 9), (200, 210)))
    assert (entry.value, length) == ("ten", 9)
    entry, length = cache.match(ids((0, 8), (90, 92), (300, 310)))
    assert (entry.value, length) == ("eight then others", 10)
    assert cache.describe() | {"bytes": None} == {"entries": 3, "bytes": None, "budget_bytes": 10_000, "hits": 2,
                                                   "misses": 0, "saved_tokens": 19}


def test_match_never_covers_the_whole_prompt_its_last_token_is_computed_for_its_logits():
    cache = PrefixCache(10_000, min_tokens=4)
    cache.add(ids((0, 30)), "thirty", 10)
    assert cache.match(ids((0, 30)))[1] == 29
    assert cache.match(ids((0, 12)))[1] == 11  # a prompt inside a longer entry
    assert cache.match([0]) == (None, 0)
    assert cache.match([]) == (None, 0)


def test_a_start_shorter_than_min_tokens_is_a_miss():
    cache = PrefixCache(10_000, min_tokens=16)
    cache.add(ids((0, 40)), "forty", 10)
    assert cache.match(ids((0, 15), (100, 140))) == (None, 0)
    assert cache.match(ids((0, 16), (100, 140)))[1] == 16
    assert cache.match(ids((1, 40))) == (None, 0)  # the first token differs
    described = cache.describe()
    assert (described["hits"], described["misses"], described["saved_tokens"]) == (1, 2, 16)
    assert not cache.add(ids((0, 15)), "too short to keep", 1)


def test_an_entry_replaces_those_it_extends_and_covers_says_when_nothing_is_new():
    cache = PrefixCache(10_000, min_tokens=4)
    cache.add(ids((0, 10)), "ten", 100)
    cache.add(ids((0, 5), (50, 60)), "other", 100)
    cache.add(ids((0, 20)), "twenty", 300)
    assert [entry.value for entry in cache.entries.values()] == ["other", "twenty"]
    assert cache.used_bytes == 400
    assert cache.covers(ids((0, 20))) and cache.covers(ids((0, 12)))
    assert not cache.covers(ids((0, 21)))
    assert not cache.covers(ids((0, 5), (50, 61)))


def test_the_byte_budget_drops_the_least_recently_used_entries_first():
    cache = PrefixCache(1000, min_tokens=4)
    for first in (100, 200, 300):
        assert cache.add(ids((first, first + 10)), first, 300)
    cache.match(ids((100, 110)))  # 100 is now the most recently used
    assert cache.add(ids((400, 410)), 400, 300)
    assert [entry.value for entry in cache.entries.values()] == [300, 100, 400]
    assert cache.add(ids((500, 510)), 500, 650)  # needs two entries' room
    assert [entry.value for entry in cache.entries.values()] == [400, 500]
    assert cache.used_bytes == 950 <= cache.budget_bytes


def test_an_entry_larger_than_the_whole_budget_is_not_kept_and_evicts_nothing():
    cache = PrefixCache(1000, min_tokens=4)
    cache.add(ids((0, 10)), "small", 400)
    assert not cache.add(ids((100, 110)), "huge", 1001)
    assert [entry.value for entry in cache.entries.values()] == ["small"]
    cache.clear()
    assert cache.describe()["entries"] == cache.describe()["bytes"] == 0


def test_the_budget_comes_from_the_engine_config_in_mib():
    assert prefix_cache_bytes({}) == PREFIX_CACHE_MB * 2**20
    assert prefix_cache_bytes({"prefix_cache_mb": 3}) == 3 * 2**20
    assert prefix_cache_bytes({"prefix_cache_mb": 0}) == 0


# -- the transformers decoder ------------------------------------------------------------------------

SHARED = ("the quick red dog ran under the table and the slow blue cat sat on the mat . "
          "a model engine reads a token batch from paris to france ? the cat sat on a red mat !")


@pytest.fixture(scope="module")
def tiny_llama_path(tiny_llm_path, tmp_path_factory):
    """A random-weight Llama (rotary positions, grouped KV heads, as SmolLM2) with the tiny GPT-2's tokenizer."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    path = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(tiny_llm_path)
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=len(tokenizer), max_position_embeddings=256,
                         initializer_range=0.2, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def model_path(request):
    return request.getfixturevalue("tiny_llm_path" if request.param == "gpt2" else "tiny_llama_path")


@pytest.fixture(scope="module")
def runtimes(model_path):
    """The same model loaded twice: {prefix_cache_mb: runtime}, with the cache on (the default) and off."""
    loaded = {}
    for megabytes in (PREFIX_CACHE_MB, 0):
        runtime = LlmRuntime(EngineSpec(name="tiny", kind="llm", model=model_path,
                                        config={"max_new_tokens": 64, "prefix_cache_mb": megabytes}), "cpu")
        runtime.load()
        runtime.eos_ids = lambda: set()  # random weights: only the limits end a row, so lengths are the test's
        loaded[megabytes] = runtime
    return loaded


@pytest.fixture
def on(runtimes):
    return runtimes[PREFIX_CACHE_MB]


@pytest.fixture
def off(runtimes):
    return runtimes[0]


class Computed:
    """Counts the input tokens the model's forwards see (their `input_ids`, padding included)."""

    def __init__(self, model):
        self.tokens = 0
        self.handle = model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        self.tokens += kwargs["input_ids"].numel()


@pytest.fixture
def computed(on):
    counter = Computed(on.model)
    yield counter
    counter.handle.remove()


def request(prompt, max_tokens=6, **fields):
    return {"prompt": prompt, "messages": None, "max_tokens": max_tokens, "temperature": 0.0, "top_p": 1.0,
            "stop": [], "seed": None, **fields}


class Item:
    def __init__(self, request):
        self.request = request

    def emit(self, event):
        pass


def drive(decoder, arrivals):
    """Run `arrivals` ({step: [(name, request)]}: each list joins before that decode step) to the end, as
    the continuous scheduler would; returns {name: result}."""
    results, running, step = {}, [], 0
    arrivals = dict(arrivals)

    def retire(finished):
        for row, result in finished.items():
            results[running[row]] = result
        decoder.keep([row for row in range(len(running)) if row not in finished])
        running[:] = [name for row, name in enumerate(running) if row not in finished]

    while arrivals or running:
        if step in arrivals:
            joining = arrivals.pop(step)
            running.extend(name for name, _ in joining)
            refused, finished = decoder.join([Item(each) for _, each in joining])
            assert not refused
            retire(finished)
        if running:
            retire(decoder.step())
        step += 1
    return results


def test_a_shared_prefix_is_prefilled_once_and_reused(on, computed):
    decoder = on.decoder()
    first = drive(decoder, {0: [("first", request(SHARED + " paris"))]})["first"]
    assert first["cached_tokens"] == 0
    assert decoder.prefix_cache.describe()["entries"] == 1
    before = computed.tokens
    second = drive(decoder, {0: [("second", request(SHARED + " france model", max_tokens=1))]})["second"]
    shared = len(on.prompt_ids(request(SHARED)))
    assert second["cached_tokens"] >= shared - 1 > 16  # the last shared token may merge with what follows
    assert computed.tokens - before == second["prompt_tokens"] - second["cached_tokens"]
    described = decoder.prefix_cache.describe()
    assert (described["hits"], described["misses"], described["saved_tokens"]) == (1, 1, second["cached_tokens"])


def test_a_cached_row_answers_as_it_does_without_the_cache(on, off):
    arrivals = {0: [("first", request(SHARED + " paris", max_tokens=3))],
                5: [("second", request(SHARED + " france model engine", max_tokens=20))]}
    with_cache, without = drive(on.decoder(), arrivals), drive(off.decoder(), arrivals)
    assert with_cache["second"]["cached_tokens"] > 16
    assert without["second"]["cached_tokens"] == 0
    assert with_cache["second"]["text"] == without["second"]["text"]
    assert with_cache["second"]["completion_tokens"] == without["second"]["completion_tokens"] == 20


def test_greedy_text_is_the_same_with_and_without_the_cache_as_rows_join_and_leave(on, off):
    words = SHARED.split()
    arrivals = {
        0: [("a", request(SHARED + " paris", 2)), ("other", request("blue engine token", 30))],
        3: [("b", request(SHARED + " france model", 9)), ("c", request(" ".join(words[:20]) + " batch", 4))],
        # a and c have left: d and e reuse prefixes of different lengths, have rests of different
        # lengths, and join between uncached rows
        7: [("long", request(" ".join(reversed(words)), 5)), ("d", request(SHARED + " france model token", 12)),
            ("new", request("slow cat", 3)), ("e", request(" ".join(words[:20]) + " batch engine sat on", 7))],
        9: [("f", request(SHARED + " paris france model engine batch token", 6))],
        20: [("g", request(SHARED + " france model token", 10))],
    }
    with_cache, without = drive(on.decoder(), arrivals), drive(off.decoder(), arrivals)
    assert {name: result["text"] for name, result in with_cache.items()} == \
        {name: result["text"] for name, result in without.items()}
    cached = {name for name, result in with_cache.items() if result["cached_tokens"]}
    assert cached == {"b", "c", "d", "e", "f", "g"}
    assert not any(result["cached_tokens"] for result in without.values())


def test_a_leaving_row_keeps_the_kv_of_its_prompt_and_the_tokens_fed_back(on):
    decoder = on.decoder()
    longer = request(" ".join(["blue"] * 80), max_tokens=12)  # beside a longer row, this one is left-padded
    result = drive(decoder, {0: [("row", request(SHARED, max_tokens=5)), ("longer", longer)]})["row"]
    prompt = on.prompt_ids(request(SHARED))
    [entry] = [entry for entry in decoder.prefix_cache.entries.values() if entry.ids[:len(prompt)] == prompt]
    assert len(entry.ids) == len(prompt) + 4  # the fifth token was chosen, never fed back
    assert entry.ids[:len(prompt)] == prompt
    assert result["completion_tokens"] == 5
    with torch.inference_mode():  # the kept KV is what these ids compute: the tokens fed back, in order
        fresh = on.model(input_ids=torch.tensor([entry.ids]), use_cache=True).past_key_values
    for (keys, values), layer in zip(entry.value, fresh.layers, strict=True):
        torch.testing.assert_close(keys, layer.keys)
        torch.testing.assert_close(values, layer.values)
    assert entry.nbytes == sum(keys.nbytes + values.nbytes for keys, values in entry.value)
    # copies, not views: the batch's tensors are freed once the row has gone, and the bytes counted are all it holds
    assert all(tensor.untyped_storage().nbytes() == tensor.nbytes for pair in entry.value for tensor in pair)


def test_the_byte_budget_evicts_the_least_recently_used_rows_kv(on):
    decoder = on.decoder()
    prompts = [f"{word} {SHARED}" for word in ("paris", "france", "model")]  # no shared start: three entries
    drive(decoder, {0: [("one", request(prompts[0], 1))]})
    [entry] = decoder.prefix_cache.entries.values()
    decoder.prefix_cache.budget_bytes = int(entry.nbytes * 2.5)  # room for two such entries
    drive(decoder, {0: [("two", request(prompts[1], 1))]})
    again = drive(decoder, {0: [("again", request(prompts[0], 1))]})["again"]  # a hit that adds nothing new
    assert again["cached_tokens"] == again["prompt_tokens"] - 1
    assert decoder.prefix_cache.describe()["entries"] == 2
    drive(decoder, {0: [("three", request(prompts[2], 1))]})
    kept = [on.tokenizer.decode(entry.ids).split()[0] for entry in decoder.prefix_cache.entries.values()]
    assert kept == ["paris", "model"]  # "france" was the least recently used
    assert decoder.prefix_cache.used_bytes <= decoder.prefix_cache.budget_bytes


def test_a_row_larger_than_the_budget_is_not_kept(on):
    decoder = on.decoder()
    decoder.prefix_cache.budget_bytes = 1024
    drive(decoder, {0: [("row", request(SHARED, 1))]})
    assert decoder.prefix_cache.describe()["entries"] == 0


def test_with_the_cache_off_the_decoder_has_none(off):
    decoder = off.decoder()
    assert decoder.prefix_cache is None
    results = drive(decoder, {0: [("a", request(SHARED, 2))], 3: [("b", request(SHARED + " paris", 2))]})
    assert [result["cached_tokens"] for result in results.values()] == [0, 0]


def test_reset_after_a_failure_drops_the_rows_and_keeps_the_cache(on):
    decoder = on.decoder()
    drive(decoder, {0: [("a", request(SHARED, 2))]})
    decoder.join([Item(request("the cat", 50))])
    decoder.reset()
    assert decoder.size == 0
    assert decoder.prefix_cache.describe()["entries"] == 1
    assert drive(decoder, {0: [("b", request(SHARED + " paris", 2))]})["b"]["cached_tokens"] > 16


def test_the_scheduler_reports_cached_tokens_in_the_result(on):
    scheduler = ContinuousScheduler(on.decoder(), max_batch_size=4, max_wait_ms=1)
    try:
        first = scheduler.submit(request(SHARED + " paris", 3)).result(timeout=30)
        second = scheduler.submit(request(SHARED + " france", 3)).result(timeout=30)
    finally:
        scheduler.close()
    assert first["cached_tokens"] == 0
    assert second["cached_tokens"] > 16
    assert second["prompt_tokens"] > second["cached_tokens"]
