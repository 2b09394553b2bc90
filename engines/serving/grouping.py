"""Concurrent embedding requests for one engine and worker, sent to the worker as one task.

Embedding one short text takes a few milliseconds of model time, less than a request costs to
publish, consume and answer through Celery and Redis; 32 clients sending a text each paid that 32
times. Here the web process gathers the embedding requests bound for the same engine and worker
that arrive within the engine's batch window (`contract.batch_window`, the worker's batcher rule)
into one task, `{"group": [request, ...]}`, which the worker's batcher takes as one arrival. Each client
still gets its own result, or its own error. Several web processes each send their own groups,
and the worker's batcher merges them as it merges single requests.

Only embeddings: a generation or a picture takes long enough that the per-request cost does not
show, and streams need events of their own.
"""

import asyncio
import time
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING

from django.conf import settings

from core import errors, tracing
from engines import contract
from engines.contract import EmbeddingPayload, Event, GroupPayload
from engines.serving import dispatch

if TYPE_CHECKING:
    from opentelemetry.trace import SpanContext

    from engines.models import Engine

GroupKey = tuple[asyncio.AbstractEventLoop, str, str | None, bool]  # (event loop, engine name, worker id, pinned)

_gathering: dict[GroupKey, "_Group"] = {}  # the groups still taking requests
_sending: set[asyncio.Task[None]] = set()  # groups' tasks, held so that none is collected while it runs


class _Group:
    requests: list[EmbeddingPayload]
    answers: "list[asyncio.Future[Event]]"

    def __init__(self, engine: "Engine", worker_id: str | None, pinned: bool) -> None:
        self.engine, self.worker_id, self.pinned = engine, worker_id, pinned
        self.max_rows, self.wait = contract.batch_window(engine.kind, engine.config)
        self.requests, self.answers, self.rows, self.ends = [], [], 0, 0.0
        self.spans: list[SpanContext | None] = []  # each request's, for the trace: one task answers them all
        self.closed = asyncio.Event()

    def add(self, payload: EmbeddingPayload, ends: float) -> "asyncio.Future[Event]":
        answer = asyncio.get_running_loop().create_future()
        self.requests.append(payload)
        self.answers.append(answer)
        self.spans.append(tracing.here())
        self.rows += len(payload["input"])
        self.ends = max(self.ends, ends)
        if self.rows >= self.max_rows:
            self.closed.set()
        return answer

    async def gather_and_send(self, key: GroupKey) -> None:
        try:
            await self._gather()
        finally:
            if _gathering.get(key) is self:
                del _gathering[key]
        try:
            await self._send()
        finally:
            for answer in self.answers:
                if not answer.done():
                    answer.set_exception(errors.TargetFailed("The worker ended the request without a result."))

    async def _gather(self) -> None:
        cap = time.monotonic() + self.wait * contract.WINDOW_WAITS
        while not self.closed.is_set():
            seen, left = len(self.requests), min(self.wait, cap - time.monotonic())
            if left <= 0:
                return
            try:
                await asyncio.wait_for(self.closed.wait(), left)
            except TimeoutError:
                if len(self.requests) == seen:
                    return  # nothing arrived for a whole wait

    async def _send(self) -> None:
        group: GroupPayload = {"group": self.requests}
        try:
            with tracing.span("blaze.group", links=self.spans, engine=self.engine.name, requests=len(self.requests),
                              rows=self.rows):
                await self._relay(group)
        except Exception as exc:  # noqa: BLE001 - each client's request raises it, as alone it would have
            for answer in self.answers:
                if not answer.done():
                    answer.set_exception(exc)

    async def _relay(self, group: GroupPayload) -> None:
        async for event in dispatch.run(self.engine, group, worker_id=self.worker_id, pinned=self.pinned,
                                        timeout=max(self.ends - time.monotonic(), 0.001)):
            if event["type"] == contract.DONE:
                for answer, result in zip(self.answers, event["result"]["results"]):
                    refused = "error" in result and errors.InvalidInput(result["error"], field=result.get("param"))
                    _answer(answer, contract.error_event(refused) if refused else
                            {"type": contract.DONE, "result": result})
            elif event["type"] == contract.ERROR:
                for answer in self.answers:
                    _answer(answer, event)


def _answer(answer: "asyncio.Future[Event]", event: Event) -> None:
    if not answer.done():  # its client may have gone
        answer.set_result(event)


async def run(engine: "Engine", payload: EmbeddingPayload, worker_id: str | None = None, timeout: float | None = None,
              pinned: bool = False) -> AsyncGenerator[Event, None]:
    """`dispatch.run` for an embedding request: yields its one event (`done` or `error`) once the
    group it joined is answered; raises as `dispatch.run` does."""
    timeout = settings.BLAZE_REQUEST_TIMEOUT_SECONDS if timeout is None else timeout
    key = (asyncio.get_running_loop(), engine.name, worker_id, pinned)
    group = _gathering.get(key)
    if group is not None and group.rows + len(payload["input"]) > group.max_rows:
        group.closed.set()  # this request would overfill it: send it now, start another
        group = None
    if group is None:
        group = _gathering[key] = _Group(engine, worker_id, pinned)
        task = asyncio.get_running_loop().create_task(group.gather_and_send(key))
        _sending.add(task)
        task.add_done_callback(_sending.discard)
    answer = group.add(payload, time.monotonic() + timeout)
    if group.closed.is_set():
        _gathering.pop(key, None)
    try:
        event = await asyncio.wait_for(asyncio.shield(answer), timeout)
    except TimeoutError as exc:
        raise errors.TimedOut(f"No answer within {timeout:.0f} s.") from exc
    yield event
