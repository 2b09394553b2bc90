"""The llama.cpp runtime on the demo's SmolLM2-135M-Instruct GGUF (Q4_1, CPU), driven by the same
ContinuousScheduler as the transformers runtime: rows join and leave one context's batch, greedy rows
answer as they would alone, Stop frees a row's sequence, the prefix cache reuses a shared start and
keeps under its budget, and the model cache counts weights, KV cells and prefix budget."""

import json
import threading
import time

import jsonschema
import pytest

from engines.contract import EngineSpec, RuntimeLoadError
from engines.worker.cache import ModelCache
from engines.worker.runtimes import runtime_for
from engines.worker.runtimes.llamacpp import LlamaCppRuntime, LlamaDecoder
from engines.worker.scheduler import ContinuousScheduler

SYSTEM = ("You are a careful assistant for a railway company. Answer in one short paragraph, in plain English, "
          "without lists. Never invent timetables; say when you do not know. Be polite and brief. ") * 4


def make(path, **config):
    runtime = runtime_for(EngineSpec(name="smol", kind="llm", model=path,
                                     config={"max_batch_size": 4, "max_new_tokens": 64, "context_length": 512,
                                             **config}), "cpu")
    runtime.load()
    return runtime


@pytest.fixture(scope="module")
def llm(smollm2_gguf_path):
    runtime = make(smollm2_gguf_path, prefix_cache_mb=0)
    yield runtime
    runtime.unload()


@pytest.fixture
def scheduler():
    made = []

    def start(runtime, **options):
        made.append(ContinuousScheduler(runtime.decoder(), **{"max_batch_size": 4, "max_wait_ms": 2, **options}))
        return made[-1]

    yield start
    for each in made:
        each.close()


def chat(content, system=None, **fields):
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": content}]
    return {"messages": messages, "max_tokens": 24, "temperature": 0.0, **fields}


QUESTIONS = ["What is the capital of France?", "Name three colours.", "Why is the sky blue?", "Count to five."]


def test_a_gguf_path_is_run_by_llama_cpp_and_sized_from_the_file(smollm2_gguf_path):
    from pathlib import Path

    spec = EngineSpec(name="smol", kind="llm", model=smollm2_gguf_path,
                      config={"max_batch_size": 2, "context_length": 256, "prefix_cache_mb": 1})
    runtime = runtime_for(spec, "cpu")
    assert isinstance(runtime, LlamaCppRuntime)
    size = Path(smollm2_gguf_path).stat().st_size
    estimate = runtime.estimate_bytes()
    assert estimate > size + 2**20  # the file, its KV cells and the prefix budget
    cache = ModelCache(budget_bytes=4 * 2**30, device="cpu")
    entry = cache.get(spec)
    try:
        assert entry.bytes == entry.runtime.loaded_bytes() and 0.8 * estimate <= entry.bytes <= 1.2 * estimate
        assert entry.describe()["scheduler"] == "continuous"
        assert isinstance(entry.batcher.decoder, LlamaDecoder)
    finally:
        cache.clear()
    assert entry.runtime.model is None


def test_a_missing_file_and_a_context_beyond_training_are_refused(smollm2_gguf_path, tmp_path):
    with pytest.raises(RuntimeLoadError, match="No GGUF file"):
        runtime_for(EngineSpec(name="x", kind="llm", model=str(tmp_path / "none.gguf"), config={}), "cpu").load()
    with pytest.raises(RuntimeLoadError, match="trained on"):
        make(smollm2_gguf_path, context_length=10**6)


def test_rows_joining_a_running_batch_answer_as_the_same_request_alone(llm, scheduler):
    alone = scheduler(llm, max_batch_size=1)
    expected = [alone.submit(chat(question)).result(timeout=60) for question in QUESTIONS]
    alone.close()
    runner = scheduler(llm)
    early = [runner.submit(chat(question)) for question in QUESTIONS[:2]]
    time.sleep(0.3)  # the first two are decoding when the others join
    late = [runner.submit(chat(question)) for question in QUESTIONS[2:]]
    results = [future.result(timeout=60) for future in early + late]
    assert [result["text"] for result in results] == [result["text"] for result in expected]
    assert all(result["completion_tokens"] > 3 for result in results)
    assert max(runner.step_sizes) == 4  # they did decode together


def test_streamed_deltas_add_up_to_the_text_and_stop_strings_cut_it(llm, scheduler):
    runner = scheduler(llm)
    pieces = []
    whole = runner.submit(chat("Count from one to ten in words."), on_event=lambda event: pieces.append(event["text"]))
    result = whole.result(timeout=60)
    assert "".join(pieces) == result["text"] and len(pieces) > 3
    stop = result["text"].split()[2]
    cut = runner.submit(chat("Count from one to ten in words.", stop=[stop])).result(timeout=60)
    assert cut["finish_reason"] == "stop" and stop not in cut["text"] and result["text"].startswith(cut["text"])


def test_stop_frees_the_row_within_a_second(llm, scheduler):
    runner = scheduler(llm, max_batch_size=1)
    stopped = threading.Event()
    tokens = []
    first = runner.submit(chat("Write a long story about a train.", max_tokens=400, cancelled=stopped.is_set),
                          on_event=lambda event: tokens.append(event))
    second = runner.submit(chat("Say hi.", max_tokens=4))
    while len(tokens) < 3:
        time.sleep(0.01)
    stopped.set()
    at = time.monotonic()
    assert first.result(timeout=30)["finish_reason"] == "cancelled"
    assert time.monotonic() - at < 1.0
    assert second.result(timeout=30)["completion_tokens"] >= 1  # the one slot was free again
    assert sorted(runner.decoder.free) == [0, 1, 2, 3] and runner.decoder.size == 0  # every sequence free


def test_a_json_schema_row_answers_valid_json(llm, scheduler):
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                               "country": {"type": "string", "maxLength": 20}},
              "required": ["city", "country"], "additionalProperties": False}
    runner = scheduler(llm)
    result = runner.submit(chat("Paris as JSON.", max_tokens=60, grammar={"json_schema": schema})).result(timeout=60)
    jsonschema.validate(json.loads(result["text"]), schema)


def test_logprobs_seeds_and_bias_are_honoured(llm, scheduler):
    runner = scheduler(llm)
    asked = chat("Name a fruit.", max_tokens=6, logprobs=2)
    result = runner.submit(asked).result(timeout=60)
    assert len(result["logprobs"]) == result["completion_tokens"]
    assert all(len(entry["top_logprobs"]) == 2 and entry["logprob"] <= 0 for entry in result["logprobs"])
    seeded = chat("Tell me a word.", temperature=1.0, seed=11, max_tokens=12)
    assert runner.submit(seeded).result(timeout=60)["text"] == runner.submit(seeded).result(timeout=60)["text"]
    first = result["logprobs"][0]["token"]
    banned = llm.tokenizer.encode(first, add_special=False)[0]
    unbiased = runner.submit(chat("Name a fruit.", max_tokens=6, logit_bias={banned: -100})).result(timeout=60)
    assert not unbiased["text"].startswith(first)


def test_a_shared_prefix_is_reused_with_the_same_greedy_text(smollm2_gguf_path, llm, scheduler):
    cached = make(smollm2_gguf_path, prefix_cache_mb=64)
    try:
        with_cache, without = scheduler(cached), scheduler(llm)
        computed = []
        real_prefill = cached._decoder._prefill
        cached._decoder._prefill = lambda prompts: (  # each prompt: (sequence, ids, tokens cached, adapter)
            computed.append(sum(len(ids) - done for _, ids, done, _ in prompts)), real_prefill(prompts))[1]
        first = with_cache.submit(chat(QUESTIONS[0], system=SYSTEM)).result(timeout=60)
        second = with_cache.submit(chat(QUESTIONS[1], system=SYSTEM)).result(timeout=60)
        assert first["cached_tokens"] == 0 and second["cached_tokens"] > 150
        assert computed[1] == second["prompt_tokens"] - second["cached_tokens"] < computed[0] / 3
        assert [first["text"], second["text"]] == [
            without.submit(chat(question, system=SYSTEM)).result(timeout=60)["text"] for question in QUESTIONS[:2]]
        stats = cached.prefix_cache_stats()
        assert stats["hits"] == 1 and stats["saved_tokens"] == second["cached_tokens"] and stats["bytes"] > 0

        # The next turn of the first conversation reuses its whole first prompt (its answer's KV, computed
        # by decode steps, is not kept: that turn's own prompt computes it, and is kept in turn).
        history = chat(QUESTIONS[0], system=SYSTEM)
        history["messages"] += [{"role": "assistant", "content": first["text"]},
                                {"role": "user", "content": "And of Italy?"}]
        third = with_cache.submit(history).result(timeout=60)
        assert third["cached_tokens"] == first["prompt_tokens"] > second["cached_tokens"]
        history["messages"] += [{"role": "assistant", "content": third["text"]},
                                {"role": "user", "content": "And of Spain?"}]
        assert with_cache.submit(history).result(timeout=60)["cached_tokens"] == third["prompt_tokens"]
    finally:
        cached.unload()


def test_the_prefix_cache_keeps_under_its_byte_budget(smollm2_gguf_path, scheduler):
    # SmolLM2's KV is about 23 KB a token: room for one long prompt
    runtime = make(smollm2_gguf_path, prefix_cache_mb=5)
    try:
        runner = scheduler(runtime)
        for question in QUESTIONS[:3]:  # each conversation starts differently: no entry shares another's start
            runner.submit(chat(question, system=question + SYSTEM, max_tokens=4)).result(timeout=60)
        stats = runtime.prefix_cache_stats()
        assert stats["bytes"] <= 5 * 2**20 and stats["entries"] == 1
        # the survivor is the last one kept: the conversation before it was evicted
        again = runner.submit(chat(QUESTIONS[2], system=QUESTIONS[2] + SYSTEM, max_tokens=4)).result(timeout=60)
        assert again["cached_tokens"] == again["prompt_tokens"] - 1
        evicted = runner.submit(chat(QUESTIONS[0], system=QUESTIONS[0] + SYSTEM, max_tokens=4)).result(timeout=60)
        assert evicted["cached_tokens"] == 0
    finally:
        runtime.unload()
