"""What a user sees of a local LLM's prefix cache, through the official openai client and a real worker:
`usage.prompt_tokens_details.cached_tokens` as OpenAI reports it (streamed and not), the same count in
the request log, the metrics' hits and tokens saved, and the cache's figures in the live feed."""

import time

import httpx
import pytest

from dashboard.feed import Feed
from engines.models import Engine
from telemetry import request_log
from tests.servers import metrics_published
from tests.telemetry.test_metrics import samples, value

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# About 120 tokens of the tiny model's vocabulary: a system prompt long enough to be worth caching.
SYSTEM = " ".join(["the quick red cat sat on the blue mat under the table."] * 10)


@pytest.fixture
def tiny(db, tiny_llm_path):
    # The default configuration: the prefix cache is on unless an operator turns it off.
    return Engine.objects.create(name="tiny-prefix", kind="llm", model=tiny_llm_path,
                                 config={"max_new_tokens": 16, "max_batch_size": 8, "batch_wait_ms": 5})


def chat(client, question, **kwargs):
    return client.chat.completions.create(
        model="tiny-prefix", messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
        max_tokens=6, temperature=0, **kwargs)


def streamed_usage(stream):
    usages = [chunk.usage for chunk in stream if chunk.usage]
    assert len(usages) == 1  # one final usage chunk, as OpenAI sends it
    return usages[0]


def logged(request_id):
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        entry = request_log.entry(request_id)
        if entry is not None:
            return entry
        time.sleep(0.1)
    raise AssertionError(f"request {request_id} never reached the request log")


def prefix_counters(base):
    metrics_published()  # every count so far, the worker's included (it publishes every 0.25 s)
    parsed = samples(httpx.get(f"{base}/metrics/prometheus", timeout=30).text)
    return (value(parsed, "blaze_prefix_cache_hits_total", engine="tiny-prefix"),
            value(parsed, "blaze_prefix_cache_tokens_saved_total", engine="tiny-prefix"))


def test_every_answer_says_how_many_prompt_tokens_were_cached(engine_worker, tiny, openai_client):
    whole = chat(openai_client, "hello")
    details = whole.usage.prompt_tokens_details
    assert details is not None and 0 <= details.cached_tokens < whole.usage.prompt_tokens
    completion = openai_client.completions.create(model="tiny-prefix", prompt="the cat", max_tokens=3, temperature=0)
    assert 0 <= completion.usage.prompt_tokens_details.cached_tokens < completion.usage.prompt_tokens
    usage = streamed_usage(chat(openai_client, "hello", stream=True, stream_options={"include_usage": True}))
    assert usage.prompt_tokens == whole.usage.prompt_tokens
    assert 0 <= usage.prompt_tokens_details.cached_tokens < usage.prompt_tokens


def test_the_request_log_keeps_the_prompt_and_cached_tokens_of_each_answer(engine_worker, tiny, openai_client):
    raw = openai_client.chat.completions.with_raw_response.create(
        model="tiny-prefix", messages=[{"role": "user", "content": "the red cat"}], max_tokens=4, temperature=0)
    answer = raw.parse()
    entry = logged(raw.headers["X-Request-ID"])
    assert (entry["tokens"], entry["prompt_tokens"], entry["cached_tokens"]) == (
        answer.usage.completion_tokens, answer.usage.prompt_tokens, answer.usage.prompt_tokens_details.cached_tokens)


def test_a_repeated_long_prompt_is_served_from_the_prefix_cache(engine_worker, tiny, openai_client, live_blaze):
    first = chat(openai_client, "what sat on the mat?")
    hits, saved = prefix_counters(live_blaze)
    raw = openai_client.chat.completions.with_raw_response.create(
        model="tiny-prefix", max_tokens=6, temperature=0,
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": "what sat on the mat?"}])
    second = raw.parse()
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert second.usage.prompt_tokens == first.usage.prompt_tokens
    assert 0 < cached < second.usage.prompt_tokens  # the shared start was reused, the rest computed
    assert second.choices[0].message.content == first.choices[0].message.content  # greedy: the same text

    assert logged(raw.headers["X-Request-ID"])["cached_tokens"] == cached
    deadline = time.monotonic() + 5  # the worker counts just after its answer goes out
    while prefix_counters(live_blaze) != (hits + 1, saved + cached) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert prefix_counters(live_blaze) == (hits + 1, saved + cached)

    usage = streamed_usage(chat(openai_client, "what sat on the mat?", stream=True,
                                stream_options={"include_usage": True}))
    assert usage.prompt_tokens_details.cached_tokens > 0

    def feed_figures():
        workers = Feed().step()[0]["workers"]
        return next((m["prefix_cache"] for w in workers if w["id"] == engine_worker.hostname
                     for m in w["models"] if m["engine"] == "tiny-prefix"), None)

    deadline = time.monotonic() + 5  # the next heartbeat carries it
    while not ((figures := feed_figures()) and figures["hits"] >= 2) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert figures["hits"] >= 2 and figures["saved_tokens"] >= cached
    assert 0 < figures["bytes"] <= figures["budget_bytes"] and figures["entries"] >= 1
