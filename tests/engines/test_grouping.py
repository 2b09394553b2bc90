"""The web process gathers concurrent embedding requests into one task (engines/serving/grouping.py).

The worker's side of a group runs in test_serving_embeddings; here `dispatch.run` is replaced by a
recorder, to see exactly which tasks would be sent and who gets which answer.
"""

import asyncio

import pytest

from core import errors
from engines.models import Engine
from engines.serving import dispatch, grouping


def embedder(max_batch_size=8, batch_wait_ms=30):
    return Engine(name="embedder", kind="embedding", model="m",
                  config={"max_batch_size": max_batch_size, "batch_wait_ms": batch_wait_ms})


@pytest.fixture
def sent(monkeypatch):
    """The groups handed to dispatch.run; each is answered with one result per request, unless a
    request's text is "refuse" (the engine refuses it) or the group holds "fail" (the worker fails)."""
    groups = []

    async def run(engine, payload, worker_id=None, timeout=None, pinned=False):
        groups.append((worker_id, [request["input"] for request in payload["group"]]))
        await asyncio.sleep(0.01)
        if any(request["input"] == ["fail"] for request in payload["group"]):
            yield {"type": "error", "error": "failed", "message": "Inference failed: out of memory", "param": None}
            return
        yield {"type": "done", "result": {"results": [
            {"error": "cannot embed that", "param": "input"} if request["input"] == ["refuse"]
            else {"embeddings": [[float(len(request["input"][0]))]], "prompt_tokens": 1}
            for request in payload["group"]
        ]}}

    monkeypatch.setattr(dispatch, "run", run)
    return groups


async def answer(engine, texts, worker_id=None, timeout=10):
    return [event async for event in grouping.run(engine, {"input": texts}, worker_id=worker_id, timeout=timeout)]


def gather(*calls):
    async def together():
        return await asyncio.gather(*calls, return_exceptions=True)

    return asyncio.run(together())


def test_concurrent_requests_travel_as_one_task_and_each_gets_its_own_result(sent):
    engine = embedder()
    answers = gather(*(answer(engine, ["x" * n]) for n in range(1, 6)))
    assert sent == [(None, [["x"], ["xx"], ["xxx"], ["xxxx"], ["xxxxx"]])]
    assert [events[0]["result"]["embeddings"] for events in answers] == [[[1.0]], [[2.0]], [[3.0]], [[4.0]], [[5.0]]]


def test_a_group_is_sent_as_soon_as_it_holds_max_batch_size_texts(sent):
    engine = embedder(max_batch_size=4, batch_wait_ms=5_000)

    async def timed():
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.gather(*(answer(engine, [f"t{i}"]) for i in range(4)))
        return loop.time() - started

    assert asyncio.run(timed()) < 2  # full: not held for the 5 s window
    assert len(sent) == 1


def test_a_request_that_would_overfill_a_group_starts_the_next(sent):
    engine = embedder(max_batch_size=4)
    gather(answer(engine, ["a", "b", "c"]), answer(engine, ["d", "e"]), answer(engine, ["f"]))
    assert [texts for _, texts in sent] == [[["a", "b", "c"]], [["d", "e"], ["f"]]]


def test_requests_for_different_workers_are_not_grouped(sent):
    engine = embedder()
    gather(answer(engine, ["a"], worker_id="w1"), answer(engine, ["b"], worker_id="w2"),
           answer(engine, ["c"], worker_id="w1"))
    assert sorted(sent) == [("w1", [["a"], ["c"]]), ("w2", [["b"]])]


def test_a_request_the_engine_refuses_fails_alone(sent):
    refused, fine = gather(answer(embedder(), ["refuse"]), answer(embedder(), ["fine"]))
    assert refused == [{"type": "error", "error": "invalid_input", "message": "cannot embed that", "param": "input"}]
    assert fine[0]["type"] == "done"


def test_a_failed_task_is_every_member_s_error(sent):
    answers = gather(answer(embedder(), ["fail"]), answer(embedder(), ["fine"]))
    assert [events[0]["error"] for events in answers] == ["failed", "failed"]


def test_no_worker_raises_for_every_member(monkeypatch):
    async def no_worker(engine, payload, worker_id=None, timeout=None, pinned=False):
        raise errors.Unavailable("No engine worker is running.")
        yield

    monkeypatch.setattr(dispatch, "run", no_worker)
    answers = gather(answer(embedder(), ["a"]), answer(embedder(), ["b"]))
    assert all(isinstance(a, errors.Unavailable) for a in answers)


def test_a_client_that_goes_away_does_not_take_the_group_with_it(sent):
    engine = embedder()

    async def one_leaves():
        leaving = asyncio.ensure_future(answer(engine, ["leaves"]))
        staying = asyncio.ensure_future(answer(engine, ["stays"]))
        await asyncio.sleep(0.005)
        leaving.cancel()
        return await staying

    assert asyncio.run(one_leaves())[0]["result"]["embeddings"] == [[5.0]]


def test_a_member_waits_no_longer_than_its_own_deadline(monkeypatch):
    async def slow(engine, payload, worker_id=None, timeout=None, pinned=False):
        await asyncio.sleep(5)
        yield {"type": "done", "result": {"results": [{}]}}

    monkeypatch.setattr(dispatch, "run", slow)
    [error] = gather(answer(embedder(batch_wait_ms=0), ["a"], timeout=0.2))
    assert isinstance(error, errors.TimedOut)
