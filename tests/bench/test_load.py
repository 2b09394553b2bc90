"""bench/load.py's verdict on each answer: a stream counts as a success only when read to [DONE] with
no error event on the way; a body only when it holds what its kind answers with."""

import asyncio

import aiohttp
import pytest

from bench.load import answer_error, body_error, stream_error

CHAT = {"model": "up", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def verdict(upstream, behaviour, kind, body):
    """(status, answer_error) of one POST of `body` to the loopback upstream's chat completions."""

    async def ask():
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{upstream.base_url(behaviour)}/chat/completions", json=body) as response:
                return response.status, await answer_error(kind, response, body)

    return asyncio.run(ask())


def lines(*items):
    async def produce():
        for item in items:
            yield item

    return produce()


def test_a_stream_that_errs_after_its_200_is_an_error(upstream):
    assert verdict(upstream, "stream_error", "chat_stream", {**CHAT, "stream": True}) == (
        200, "stream error event (target_failed)")


def test_a_whole_stream_and_a_whole_chat_are_successes(upstream):
    assert verdict(upstream, "ok", "chat_stream", {**CHAT, "stream": True}) == (200, None)
    assert verdict(upstream, "ok", "chat", CHAT) == (200, None)


def test_a_stream_that_ends_without_done_is_an_error():
    chunk = b'data: {"choices": [{"index": 0, "delta": {"content": "Hi"}}]}\n'
    assert asyncio.run(stream_error(lines(chunk, b"\n"))) == "stream ended without [DONE]"
    assert asyncio.run(stream_error(lines(chunk, b"\n", b"data: [DONE]\n"))) is None
    assert asyncio.run(stream_error(lines(b"data: [DONE]\n"))) == "stream without chunks"


def test_an_error_status_or_a_body_that_is_not_json_is_an_error(upstream):
    assert verdict(upstream, "fail", "chat", CHAT) == (500, "HTTP 500")
    assert verdict(upstream, "garbage", "chat", CHAT) == (200, "body not JSON")


@pytest.mark.parametrize(("kind", "body", "sent", "error"), [
    ("chat", {"choices": []}, None, "chat without a message"),
    ("chat", {"choices": [{"index": 0, "finish_reason": "stop"}]}, None, "chat without a message"),
    ("embeddings", {"data": [{"embedding": [0.1, 0.2]}]}, {"input": ["a", "b"]},
     "embeddings: not one vector per input"),
    ("embeddings", {"data": [{"embedding": [0.1]}, {"embedding": []}]}, {"input": ["a", "b"]},
     "embeddings: not one vector per input"),
    ("embeddings", {"data": [{"embedding": [0.1]}, {"embedding": [0.2]}]}, {"input": ["a", "b"]}, None),
    ("image", {"data": [{"url": "http://x/y.png"}]}, {"prompt": "a cat"}, "image without PNG data"),
    ("image", {"data": [{"b64_json": "bm90IGEgcG5n"}]}, {"prompt": "a cat"}, "image without PNG data"),
    ("image", {"data": [{"b64_json": "iVBORw0KGgo="}]}, {"prompt": "a cat"}, None),
    ("api_read", {"results": []}, None, None),
])
def test_a_body_must_hold_what_its_kind_answers_with(kind, body, sent, error):
    assert body_error(kind, body, sent) == error
