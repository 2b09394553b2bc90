"""Dynamic batching: concurrent requests for one model become one batched call.

Written here rather than taken from a library: the policy is two numbers (max batch size, max wait)
and requests must stream their own events, which no general batching library offers for threads.
"""

import collections
import queue
import threading
import time
from collections.abc import Callable, Collection, Hashable, Sequence
from concurrent.futures import Future
from typing import Any

from core.errors import TimedOut
from engines.contract import WINDOW_WAITS, Event
from engines.worker.runtimes import Emit

# Any: a request and its result are the runtime's shapes (LlmRequest, …; a dict), which the batcher passes through.
RunBatch = Callable[[list[Any], Emit], list[Any]]  # run_batch(requests, emit): one result per request, in order
OnEvent = Callable[[Event], None]  # a request's own events


def past_deadline(request: object, wall: float) -> bool:
    """Whether the request (a payload dict) carries a deadline (epoch seconds) that `wall` has passed."""
    return isinstance(request, dict) and (request.get("deadline") or wall) < wall


def too_late(waited: float, what: str) -> TimedOut:
    return TimedOut(f"The request waited {waited:.1f} s for {what} and its deadline passed.")


def timed(result: Any, waited: float, batch_size: int, worker_seconds: float) -> Any:
    """A request's result with the worker's timings (contract: a `done` result's `queue_seconds`, the
    wait for its slot, the `batch_size` it ran in, and `worker_seconds`, its share of the time the batch
    ran: the run divided by the rows it ran with); a non-dict result passes as it is."""
    if not isinstance(result, dict):
        return result
    return {**result, "queue_seconds": round(waited, 4), "batch_size": batch_size,
            "worker_seconds": round(worker_seconds, 6)}


def retry_after(recent_seconds: Collection[float], pending: int, rows: int) -> int:
    """Seconds until a waiting request may expect to run: the batches of `rows` queued ahead × how long
    recent ones took (`recent_seconds`), between 1 and 60."""
    held = sum(recent_seconds) / len(recent_seconds) if recent_seconds else 1.0
    return max(1, min(60, round(held * (1 + pending / rows))))


class _Item:
    __slots__ = ("request", "on_event", "future", "key", "size", "gathered", "arrived")

    def __init__(self, request: Any, on_event: OnEvent | None, key: Hashable, size: int,
                 gathered: bool = False) -> None:
        self.request, self.on_event, self.key, self.size, self.gathered = request, on_event, key, size, gathered
        self.future: Future[Any] = Future()
        self.arrived = time.monotonic()


class DynamicBatcher:
    """Collects requests until `max_batch_size` rows are waiting or none has arrived for `max_wait_ms`,
    then calls `run_batch(requests, emit)` once on a thread of its own. A request is `batch_size(request)`
    rows (default 1; an embedding request one per text): a request of 32 texts fills a batch of 32 at
    once rather than waiting for 31 more requests. A request bigger than the batch runs alone.

    The wait restarts with each arrival (up to WINDOW_WAITS × max_wait_ms in all): a burst of clients
    reaches the worker spread over tens of milliseconds, and a fixed window from the first arrival
    would cut it into a small batch and a second one that waits for the whole first generation.
    A lone request still waits only `max_wait_ms`.

    Only requests with equal `batch_key(request)` share a batch; the others wait for a later one.
    `submit` returns a Future with the request's own result; `on_event` receives its own events.
    `submit_group` queues requests gathered elsewhere as one arrival.
    `on_admit(request, waited_seconds, batch_size)` as a request's batch starts; `on_step(requests,
    seconds)` and `on_batch(requests, seconds, error)` once it ran.
    """

    def __init__(self, run_batch: RunBatch, *, max_batch_size: int, max_wait_ms: float,
                 batch_key: Callable[[Any], Hashable] | None = None, batch_size: Callable[[Any], int] | None = None,
                 name: str = "batcher", on_batch: Callable[[int, float, BaseException | None], None] | None = None,
                 on_admit: Callable[[Any, float, int], None] | None = None,
                 on_step: Callable[[int, float], None] | None = None) -> None:
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.batch_key = batch_key or (lambda request: None)
        self.batch_size = batch_size or (lambda request: 1)
        self.on_batch, self.on_admit, self.on_step = on_batch, on_admit, on_step
        self.batch_sizes: collections.deque[int] = collections.deque(maxlen=1000)
        self.batch_seconds: collections.deque[float] = collections.deque(maxlen=50)
        self._queue: queue.Queue[_Item | list[_Item] | None] = queue.Queue()  # an arrival; None: closed
        self._held: collections.deque[_Item] = collections.deque()
        self._closed = False
        self.running = 0  # requests taken from the queue whose batch has not finished (1 while collecting)
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, request: Any, on_event: OnEvent | None = None) -> "Future[Any]":
        if self._closed:
            raise RuntimeError("This model is being unloaded; retry the request.")
        item = _Item(request, on_event, self.batch_key(request), self.batch_size(request))
        self._queue.put(item)
        return item.future

    def submit_group(self, requests: Sequence[Any]) -> "list[Future[Any]]":
        """Futures for requests someone already gathered (the web process groups concurrent embedding
        requests): queued as one arrival, so no batch cuts the group, and run without waiting for more
        when the group starts a batch, since its gatherer already waited."""
        if self._closed:
            raise RuntimeError("This model is being unloaded; retry the request.")
        items = [_Item(request, None, self.batch_key(request), self.batch_size(request), gathered=True)
                 for request in requests]
        self._queue.put(items)
        return [item.future for item in items]

    @property
    def pending(self) -> int:
        return self._queue.qsize() + len(self._held)

    def retry_after(self) -> int:
        return retry_after(self.batch_seconds, self.pending, self.max_batch_size)

    def close(self) -> None:
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _next(self, timeout: float | None) -> _Item | None:
        if self._held:
            return self._held.popleft()
        try:
            entry = self._queue.get(timeout=timeout) if timeout is None or timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            return None
        if isinstance(entry, list):  # a group: its first now, the rest before anything else
            self._held.extendleft(reversed(entry[1:]))
            return entry[0]
        return entry

    def _collect(self) -> list[_Item] | None:
        first = self._next(None)
        if first is None:
            return None
        self.running = 1  # from the first request taken until its batch has run: the model is busy
        batch, others, rows = [first], [], first.size
        wait = 0 if first.gathered else self.max_wait
        cap = first.arrived + wait * WINDOW_WAITS
        deadline = min(first.arrived + wait, cap)
        while rows < self.max_batch_size:
            item = self._next(deadline - time.monotonic())
            if item is None:
                if self._closed or time.monotonic() >= deadline:
                    break
                continue
            if item.key != first.key:
                others.append(item)
            elif rows + item.size > self.max_batch_size:
                others.append(item)  # it would overfill this batch: it starts the next one
                break
            else:
                batch.append(item)
                rows += item.size
            deadline = min(time.monotonic() + wait, cap)
        self._held.extend(others)
        return batch

    def _loop(self) -> None:
        while True:
            batch = self._collect()
            if batch is None:
                if self._closed:
                    break
                continue
            try:
                self._run(batch)
            finally:
                self.running = 0
        for item in iter(lambda: self._next(0), None):
            item.future.set_exception(RuntimeError("The model was unloaded before this request ran; retry it."))

    def _run(self, batch: list[_Item]) -> None:
        now, wall = time.monotonic(), time.time()
        late = [item for item in batch if past_deadline(item.request, wall)]
        for item in late:  # its client's deadline passed while it waited: running it helps nobody
            item.future.set_exception(too_late(now - item.arrived, "a batch"))
        batch = [item for item in batch if item not in late]
        if not batch:
            return
        if self.on_admit:
            for item in batch:
                self.on_admit(item.request, now - item.arrived, len(batch))
        self.batch_sizes.append(len(batch))

        def emit(index: int, event: Event) -> None:
            callback = batch[index].on_event
            if callback is not None:
                callback(event)

        started, error = time.monotonic(), None
        try:
            results = self.run_batch([item.request for item in batch], emit)
        except Exception as exc:  # noqa: BLE001 - the batch failed as a whole: every caller hears why
            error = exc
        seconds = time.monotonic() - started
        if error is None:
            for item, result in zip(batch, results):
                item.future.set_result(timed(result, now - item.arrived, len(batch), seconds / len(batch)))
            self.batch_seconds.append(seconds)
        else:
            for item in batch:
                item.future.set_exception(error)
        if self.on_step:
            self.on_step(len(batch), seconds)
        if self.on_batch:
            self.on_batch(len(batch), seconds, error)
