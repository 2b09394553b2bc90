import math
from dataclasses import replace

import pytest

from engines.contract import EngineSpec, RuntimeLoadError
from engines.worker.runtimes.embedding import EmbeddingRuntime, cosine


def embed(runtime, *texts):
    return runtime.run_batch([{"input": list(texts)}], emit=None)[0]


def norm(vector):
    return math.sqrt(sum(x * x for x in vector))


def test_vectors_have_384_dimensions(minilm_runtime):
    assert [len(v) for v in embed(minilm_runtime, "hello", "world")["embeddings"]] == [384, 384]
    assert minilm_runtime.health()["dimension"] == 384


def test_similar_words_are_closer(minilm_runtime):
    cat, kitten, car = embed(minilm_runtime, "cat", "kitten", "car")["embeddings"]
    assert cosine(cat, kitten) > cosine(cat, car)


def test_cosine():
    assert cosine([1, 0], [1, 0]) == pytest.approx(1.0)
    assert cosine([1, 0], [0, 2]) == pytest.approx(0.0)
    assert cosine([1, 1], [-1, -1]) == pytest.approx(-1.0)
    assert cosine([0, 0], [1, 0]) == 0.0


def test_normalize_gives_unit_vectors_and_can_be_turned_off(minilm_runtime, minilm_spec):
    assert norm(embed(minilm_runtime, "a unit vector")["embeddings"][0]) == pytest.approx(1.0, abs=1e-5)
    raw = EmbeddingRuntime(replace(minilm_spec, config={**minilm_spec.config, "normalize": False}), "cpu")
    raw.load()
    assert abs(norm(embed(raw, "a unit vector")["embeddings"][0]) - 1.0) > 0.01


def test_batched_requests_get_their_own_vectors_in_order(minilm_runtime):
    first, second = ["the first request", "has two texts"], ["the second one, longer than the others by far"]
    batched = minilm_runtime.run_batch([{"input": first}, {"input": second}], emit=None)
    alone = [minilm_runtime.model.encode([text], normalize=True)[0].tolist() for text in first + second]
    assert [len(result["embeddings"]) for result in batched] == [2, 1]
    assert [result["cache_hits"] for result in batched] == [0, 0]
    for got, want in zip(batched[0]["embeddings"] + batched[1]["embeddings"], alone):
        assert got == pytest.approx(want, abs=1e-5)


def test_repeated_text_is_a_cache_hit_with_the_same_vector(minilm_runtime):
    before = minilm_runtime.stats()
    first = embed(minilm_runtime, "a text seen twice")
    again = embed(minilm_runtime, "a text seen twice")
    after = minilm_runtime.stats()
    assert (first["cache_hits"], again["cache_hits"]) == (0, 1)
    assert again["embeddings"] == first["embeddings"]
    assert after["cache_hits"] - before["cache_hits"] == 1
    assert after["cache_misses"] - before["cache_misses"] == 1
    assert after["hit_rate"] == after["cache_hits"] / (after["cache_hits"] + after["cache_misses"])
    assert {"cache_entries", "cache_hits", "cache_misses", "hit_rate"} <= minilm_runtime.health().keys()


def test_cache_evicts_the_least_recently_used(minilm_spec):
    small = EmbeddingRuntime(minilm_spec, "cpu", cache_size=2)
    small.load()
    embed(small, "one", "two")
    embed(small, "one")  # "one" is now the most recently used
    embed(small, "three")  # evicts "two"
    assert small.stats()["cache_entries"] == 2
    assert embed(small, "one", "two")["cache_hits"] == 1


def test_long_text_is_cut_at_max_seq_length(minilm_spec):
    short = EmbeddingRuntime(replace(minilm_spec, config={**minilm_spec.config, "max_seq_length": 16}), "cpu")
    short.load()
    result = embed(short, "word " * 500)
    assert result["prompt_tokens"] <= 16
    assert len(result["embeddings"][0]) == 384


def test_estimate_matches_the_loaded_weights(minilm_runtime):
    assert minilm_runtime.estimate_bytes() == pytest.approx(minilm_runtime.loaded_bytes(), rel=0.01)


def test_missing_directory_is_a_load_error(tmp_path):
    runtime = EmbeddingRuntime(EngineSpec(name="gone", kind="embedding", model=str(tmp_path / "gone")), "cpu")
    with pytest.raises(RuntimeLoadError, match="gone"):
        runtime.load()
