"""Embeddings end to end: the official openai client → daphne → a real Celery worker → batcher → MiniLM."""

import concurrent.futures

import pytest

from engines.demo import minilm_path
from engines.models import Engine

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def minilm(db):
    return Engine.objects.create(name="minilm", kind="embedding", model=str(minilm_path()),
                                 config={"normalize": True, "max_seq_length": 128, "max_batch_size": 32,
                                         "batch_wait_ms": 50})


def cosine(u, v):
    return sum(a * b for a, b in zip(u, v))


def test_openai_client_gets_embeddings_that_mean_something(engine_worker, minilm, openai_client):
    response = openai_client.embeddings.create(model="minilm", input=["cat", "kitten", "car"])
    cat, kitten, car = (item.embedding for item in response.data)
    assert len(cat) == 384
    assert cosine(cat, kitten) > cosine(cat, car)
    assert response.usage.prompt_tokens > 0


def test_concurrent_requests_are_batched_and_each_gets_its_own_vectors(engine_worker, minilm, openai_client):
    alone = openai_client.embeddings.create(model="minilm", input="the number 7").data[0].embedding
    texts = [f"the number {i}" for i in range(16)]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda t: openai_client.embeddings.create(model="minilm", input=t), texts))
    assert max(abs(a - b) for a, b in zip(results[7].data[0].embedding, alone)) < 1e-4
    assert len({tuple(r.data[0].embedding[:4]) for r in results}) == 16
    from engines.worker.status import engine_stats

    stats = engine_stats("minilm")
    assert stats["requests"] >= 17 and stats["batches"] < stats["requests"]  # merged, not one by one


def test_models_lists_enabled_engines(engine_worker, minilm, openai_client):
    assert "minilm" in [model.id for model in openai_client.models.list().data]


def test_unknown_model_is_a_404_naming_the_field(engine_worker, minilm, openai_client):
    import openai

    with pytest.raises(openai.NotFoundError) as error:
        openai_client.embeddings.create(model="nope", input="x")
    assert error.value.body["param"] == "model"


def test_bad_input_is_a_400_naming_the_field(engine_worker, minilm, openai_client):
    import openai

    with pytest.raises(openai.BadRequestError) as error:
        openai_client.embeddings.create(model="minilm", input=[])
    assert error.value.body["param"] == "input"
