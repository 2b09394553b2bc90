"""Chat and completions end to end with the official openai client, streaming included."""

import concurrent.futures
import time

import pytest

from engines.models import Engine
from engines.worker.status import engine_stats
from telemetry import request_log

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def tiny(db, tiny_llm_path):
    return Engine.objects.create(name="tiny", kind="llm", model=tiny_llm_path,
                                 config={"max_new_tokens": 64, "max_batch_size": 8, "batch_wait_ms": 200})


def settled_stats(name):
    """The engine's stats once they stop moving (its last requests' numbers written)."""
    last = engine_stats(name)
    while True:
        time.sleep(0.3)
        now = engine_stats(name)
        if now == last:
            return now
        last = now


def chat(client, text="hello", **kwargs):
    return client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": text}], **kwargs)


def test_chat_completion_answers_with_usage(engine_worker, tiny, openai_client):
    response = chat(openai_client, max_tokens=5, temperature=0)
    assert response.choices[0].message.role == "assistant"
    assert response.choices[0].finish_reason in ("stop", "length")
    assert 0 < response.usage.completion_tokens <= 5
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens


def test_completion_answers(engine_worker, tiny, openai_client):
    response = openai_client.completions.create(model="tiny", prompt="the cat", max_tokens=4, temperature=0)
    assert response.choices[0].text and response.usage.completion_tokens <= 4


def test_streamed_chat_arrives_in_order_and_matches_the_whole_answer(engine_worker, tiny, openai_client):
    whole = chat(openai_client, "the dog", max_tokens=12, temperature=0).choices[0].message.content
    stream = chat(openai_client, "the dog", max_tokens=12, temperature=0, stream=True,
                  stream_options={"include_usage": True})
    pieces, finish, usage = [], None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(pieces) == whole
    assert finish in ("stop", "length") and usage.completion_tokens <= 12


def test_a_streamed_answer_is_logged_with_the_tokens_it_generated(engine_worker, tiny, openai_client):
    # Never the end-of-text token: 40 tokens, some of them halves of a character, streamed as one chunk.
    raw = openai_client.chat.completions.with_raw_response.create(
        model="tiny", messages=[{"role": "user", "content": "the dog"}], max_tokens=40, temperature=0,
        logit_bias={"0": -100}, stream=True, stream_options={"include_usage": True})
    usage = [chunk.usage for chunk in raw.parse() if chunk.usage][0]
    deadline = time.monotonic() + 5
    while (entry := request_log.entry(raw.headers["X-Request-ID"])) is None:
        assert time.monotonic() < deadline, "the request never reached the request log"
        time.sleep(0.1)
    assert entry["tokens"] == usage.completion_tokens == 40


def test_streamed_completion_ends_with_done(engine_worker, tiny, live_blaze, openai_client):
    import httpx

    body = {"model": "tiny", "prompt": "the", "max_tokens": 3, "stream": True, "temperature": 0}
    with httpx.stream("POST", f"{live_blaze}/v1/completions", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {openai_client.api_key}"}) as response:
        lines = [line for line in response.iter_lines() if line]
    assert response.headers["content-type"].startswith("text/event-stream")
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)


def test_concurrent_chats_are_batched_and_each_gets_its_own_answer(engine_worker, tiny, openai_client):
    prompts = [f"the {word}" for word in ("cat", "dog", "mat", "table", "red", "blue")]
    alone = {p: chat(openai_client, p, max_tokens=6, temperature=0).choices[0].message.content for p in prompts[:2]}
    before = settled_stats("tiny")  # the worker counts a request just after its answer goes out
    with concurrent.futures.ThreadPoolExecutor(len(prompts)) as pool:
        answers = dict(zip(prompts, pool.map(
            lambda p: chat(openai_client, p, max_tokens=6, temperature=0).choices[0].message.content, prompts)))
    deadline = time.monotonic() + 5  # a batch's numbers are written just after its answers go out
    while engine_stats("tiny")["requests"] - before["requests"] < len(prompts) and time.monotonic() < deadline:
        time.sleep(0.05)
    after = engine_stats("tiny")
    assert all(answers[p] == alone[p] for p in alone)
    assert after["requests"] - before["requests"] == len(prompts)
    assert after["batches"] - before["batches"] < len(prompts)  # merged into fewer batched calls


@pytest.mark.parametrize("kwargs, param", [
    ({"max_tokens": -1}, "max_tokens"), ({"max_tokens": 100000}, "max_tokens"), ({"max_tokens": "ten"}, "max_tokens"),
    ({"temperature": 5}, "temperature"), ({"top_p": 0}, "top_p"), ({"n": 9}, "n"), ({"seed": -3}, "seed"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"), ({"messages": []}, "messages"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
])
def test_bad_parameters_are_400s_naming_the_field(engine_worker, tiny, openai_client, kwargs, param):
    import openai

    arguments = {"model": "tiny", "messages": [{"role": "user", "content": "x"}], **kwargs}
    with pytest.raises(openai.BadRequestError) as error:
        openai_client.chat.completions.create(**arguments)
    assert error.value.body["param"] == param


def test_wrong_kind_and_disabled_and_unknown_models_are_refused(engine_worker, tiny, openai_client):
    import openai

    with pytest.raises(openai.BadRequestError):
        openai_client.embeddings.create(model="tiny", input="x")
    Engine.objects.filter(name="tiny").update(enabled=False)
    with pytest.raises(openai.NotFoundError):
        chat(openai_client)


def test_no_key_and_wrong_scope_are_refused(engine_worker, tiny, live_blaze, key_for, viewer_user):
    import openai
    from openai import OpenAI

    with pytest.raises(openai.AuthenticationError):
        chat(OpenAI(base_url=f"{live_blaze}/v1", api_key="blz_wrong", max_retries=0))
    _, read_only = key_for(viewer_user, scopes=["read"])
    with pytest.raises(openai.PermissionDeniedError):
        chat(OpenAI(base_url=f"{live_blaze}/v1", api_key=read_only, max_retries=0))

