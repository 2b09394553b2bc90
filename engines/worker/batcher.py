"""Dynamic batching: concurrent requests for one model become one batched call.

Written here rather than taken from a library: the policy is two numbers (max batch size, max wait)
and requests must stream their own events, which no general batching library offers for threads.
"""

import collections
import queue
import threading
import time
from concurrent.futures import Future

from blaze_site.errors import TimedOut
from engines.contract import WINDOW_WAITS


def past_deadline(request, wall):
    """Whether the request (a payload dict) carries a deadline (epoch seconds) that `wall` has passed."""
    return isinstance(request, dict) and (request.get("deadline") or wall) < wall


def too_late(waited, what):
    return TimedOut(f"The request waited {waited:.1f} s for {what} and its deadline passed.")


def retry_after(recent_seconds, pending, rows):
    """Seconds until a waiting request may expect to run: the batches of `rows` queued ahead × how long
    recent ones took (`recent_seconds`), between 1 and 60."""
    held = sum(recent_seconds) / len(recent_seconds) if recent_seconds else 1.0
    return max(1, min(60, round(held * (1 + pending / rows))))


class _Item:
    __slots__ = ("request", "on_event", "future", "key", "size", "gathered", "arrived")

    def __init__(self, request, on_event, key, size, gathered=False):
        self.request, self.on_event, self.key, self.size, self.gathered = request, on_event, key, size, gathered
        self.future = Future()
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

    def __init__(self, run_batch, *, max_batch_size, max_wait_ms, batch_key=None, batch_size=None, name="batcher",
                 on_batch=None, on_admit=None, on_step=None):
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.batch_key = batch_key or (lambda request: None)
        self.batch_size = batch_size or (lambda request: 1)
        self.on_batch, self.on_admit, self.on_step = on_batch, on_admit, on_step
        self.batch_sizes = collections.deque(maxlen=1000)
        self.batch_seconds = collections.deque(maxlen=50)
        self._queue = queue.Queue()
        self._held = collections.deque()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, request, on_event=None):
        if self._closed:
            raise RuntimeError("This model is being unloaded; retry the request.")
        item = _Item(request, on_event, self.batch_key(request), self.batch_size(request))
        self._queue.put(item)
        return item.future

    def submit_group(self, requests):
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
    def pending(self):
        return self._queue.qsize() + len(self._held)

    def retry_after(self):
        return retry_after(self.batch_seconds, self.pending, self.max_batch_size)

    def close(self):
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _next(self, timeout):
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

    def _collect(self):
        first = self._next(None)
        if first is None:
            return None
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

        def emit(index, event):
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
                item.future.set_result(result)
            self.batch_seconds.append(seconds)
        else:
            for item in batch:
                item.future.set_exception(error)
        if self.on_step:
            self.on_step(len(batch), seconds)
        if self.on_batch:
            self.on_batch(len(batch), seconds, error)
