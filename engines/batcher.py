"""Dynamic batching: concurrent requests for one model become one batched call.

Written here rather than taken from a library: the policy is two numbers (max batch size, max wait)
and requests must stream their own events, which no general batching library offers for threads.
"""

import collections
import queue
import threading
import time
from concurrent.futures import Future


WINDOW_CAP = 10


class _Item:
    __slots__ = ("request", "on_event", "future", "key", "arrived")

    def __init__(self, request, on_event, key):
        self.request, self.on_event, self.key = request, on_event, key
        self.future = Future()
        self.arrived = time.monotonic()


class DynamicBatcher:
    """Collects requests until `max_batch_size` are waiting or none has arrived for `max_wait_ms`,
    then calls `run_batch(requests, emit)` once on a thread of its own.

    The wait restarts with each arrival (up to WINDOW_CAP × max_wait_ms in all): a burst of clients
    reaches the worker spread over tens of milliseconds, and a fixed window from the first arrival
    would cut it into a small batch and a second one that waits for the whole first generation.
    A lone request still waits only `max_wait_ms`.

    Only requests with equal `batch_key(request)` share a batch; the others wait for a later one.
    `submit` returns a Future with the request's own result; `on_event` receives its own events.
    """

    def __init__(self, run_batch, *, max_batch_size, max_wait_ms, batch_key=None, name="batcher", on_batch=None):
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.batch_key = batch_key or (lambda request: None)
        self.on_batch = on_batch
        self.batch_sizes = collections.deque(maxlen=1000)
        self._queue = queue.Queue()
        self._held = collections.deque()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, request, on_event=None):
        if self._closed:
            raise RuntimeError("This model is being unloaded; retry the request.")
        item = _Item(request, on_event, self.batch_key(request))
        self._queue.put(item)
        return item.future

    @property
    def pending(self):
        return self._queue.qsize() + len(self._held)

    def close(self):
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _next(self, timeout):
        if self._held:
            return self._held.popleft()
        try:
            return self._queue.get(timeout=timeout) if timeout is None or timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            return None

    def _collect(self):
        first = self._next(None)
        if first is None:
            return None
        batch, others = [first], []
        cap = first.arrived + self.max_wait * WINDOW_CAP
        deadline = min(first.arrived + self.max_wait, cap)
        while len(batch) < self.max_batch_size:
            item = self._next(deadline - time.monotonic())
            if item is None:
                if self._closed or time.monotonic() >= deadline:
                    break
                continue
            (batch if item.key == first.key else others).append(item)
            deadline = min(time.monotonic() + self.max_wait, cap)
        self._held.extend(others)
        return batch

    def _loop(self):
        while True:
            batch = self._collect()
            if batch is None:
                if self._closed:
                    break
                continue
            self._run(batch)
        for item in iter(lambda: self._next(0), None):
            item.future.set_exception(RuntimeError("The model was unloaded before this request ran; retry it."))

    def _run(self, batch):
        self.batch_sizes.append(len(batch))

        def emit(index, event):
            callback = batch[index].on_event
            if callback is not None:
                callback(event)

        started = time.monotonic()
        try:
            results = self.run_batch([item.request for item in batch], emit)
        except Exception as exc:  # the batch failed as a whole: every caller hears why
            for item in batch:
                item.future.set_exception(exc)
            if self.on_batch:
                self.on_batch(len(batch), time.monotonic() - started, exc)
            return
        for item, result in zip(batch, results):
            item.future.set_result(result)
        if self.on_batch:
            self.on_batch(len(batch), time.monotonic() - started, None)
