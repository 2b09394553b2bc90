"""LoRA adapters served end to end with the official openai client: an adapter trained here on the tiny
GPT-2, asked for as `base:adapter` or by its own name, answers with its own text in the base's running
batch beside other adapters' rows; /v1/models lists it; a request naming an adapter its base does not
have is a 400 naming `model`; the worker's cache counts the adapters' bytes; the request log and the
usage records name the adapter."""

import concurrent.futures
import time

import openai
import pytest

from engines import contract
from engines.celery_app import app
from engines.heartbeats import worker_info
from engines.models import Adapter, Engine
from telemetry import request_log
from usage import persist
from usage.models import UsageRecord

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

WORDS = 6


@pytest.fixture
def base(db, tiny_llm_path, tiny_loras):
    engine = Engine.objects.create(name="lorabase", kind="llm", model=tiny_llm_path,
                                   config={"max_new_tokens": 64, "max_batch_size": 8, "batch_wait_ms": 300})
    for name, path in tiny_loras.items():
        Adapter.objects.create(engine=engine, name=name, path=path)
    return engine


def chat(client, model, text="the cat sat", **kwargs):
    response = client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}],
                                              max_tokens=WORDS, temperature=0, **kwargs)
    return response.choices[0].message.content


def test_an_adapter_answers_by_base_and_name_and_by_its_own_name(engine_worker, base, openai_client):
    as_base = chat(openai_client, "lorabase")
    for model in ("lorabase:red", "red"):
        response = openai_client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "the cat sat"}], max_tokens=WORDS, temperature=0)
        assert response.choices[0].message.content.split() == ["red"] * WORDS
        assert response.model == "red"
    completion = openai_client.completions.create(model="lorabase:blue", prompt="a dog", max_tokens=WORDS,
                                                  temperature=0)
    assert completion.choices[0].text.split() == ["blue"] * WORDS
    assert as_base.split() != ["red"] * WORDS and as_base.split() != ["blue"] * WORDS


def test_concurrent_requests_of_two_adapters_and_the_base_each_get_their_own_answer(
        engine_worker, base, openai_client):
    models = ["lorabase", "red", "blue"] * 2
    alone = {model: chat(openai_client, model, "hello there") for model in set(models)}
    with concurrent.futures.ThreadPoolExecutor(len(models)) as pool:  # within one batch window: one batch
        together = list(pool.map(lambda model: chat(openai_client, model, "hello there"), models))
    assert together == [alone[model] for model in models]
    assert len({alone["lorabase"], alone["red"], alone["blue"]}) == 3


def test_models_lists_each_adapter_with_its_base(engine_worker, base, openai_client):
    listed = {model.id: model for model in openai_client.models.list().data}
    assert {"lorabase", "red", "blue"} <= set(listed)
    assert (listed["red"].parent, listed["red"].adapter) == ("lorabase", True)


def test_an_adapter_the_base_does_not_have_is_a_400_naming_model(engine_worker, base, tiny_llm_path,
                                                                  openai_client):
    Engine.objects.create(name="otherbase", kind="llm", model=tiny_llm_path)
    for model, says in (("lorabase:green", "has no adapter 'green'"),
                        ("otherbase:red", "runs on engine 'lorabase', not 'otherbase'")):
        with pytest.raises(openai.BadRequestError) as refused:
            chat(openai_client, model)
        assert refused.value.body["param"] == "model" and says in refused.value.body["message"]
    Adapter.objects.filter(name="blue").update(enabled=False)
    with pytest.raises(openai.NotFoundError):
        chat(openai_client, "blue")


def test_the_workers_cache_counts_the_adapters_it_loaded(engine_worker, base, openai_client):
    app.send_task(contract.CACHE_UNLOAD_TASK, args=["lorabase"],  # loaded afresh, without adapters
                  queue=contract.worker_queue(engine_worker.hostname)).get(timeout=60)
    chat(openai_client, "lorabase")
    before = cached(engine_worker.hostname)
    assert before["adapters"] == {}
    chat(openai_client, "red")
    chat(openai_client, "blue")
    deadline = time.monotonic() + 10
    while len((after := cached(engine_worker.hostname))["adapters"]) < 2:
        assert time.monotonic() < deadline, after
        time.sleep(0.2)
    assert set(after["adapters"]) == {"red", "blue"} and min(after["adapters"].values()) > 0
    assert after["bytes"] == before["bytes"] + sum(after["adapters"].values())


def cached(worker):
    return next(entry for entry in worker_info(worker)["cache"] if entry["engine"] == "lorabase")


def test_the_request_log_and_the_usage_record_name_the_adapter(engine_worker, base, openai_client):
    raw = openai_client.chat.completions.with_raw_response.create(
        model="lorabase:blue", messages=[{"role": "user", "content": "hi"}], max_tokens=WORDS, temperature=0)
    deadline = time.monotonic() + 10
    while (entry := request_log.entry(raw.headers["X-Request-ID"])) is None:
        assert time.monotonic() < deadline, "the request never reached the request log"
        time.sleep(0.1)
    assert (entry["model"], entry["adapter"]) == ("blue", "blue")
    while not (records := list(UsageRecord.objects.filter(engine="lorabase", adapter="blue"))):
        assert time.monotonic() < deadline + 20, "no usage record names the adapter"
        persist.drain()
        time.sleep(0.2)
    assert records[0].completion_tokens == WORDS
