"""Iteration-level (continuous) scheduling for a decoder-only LLM: one loop per loaded model that, at
every decode step, admits waiting requests into the running batch and retires finished rows at once.

A request arriving while others generate gets its first token after one prefill, not after the whole
batch; a short answer leaves the batch when it is done instead of waiting for the longest row; a
row whose client stopped or left stops decoding at the next step and frees its slot.

Admission order: highest effective priority first, where a request's priority (0-9, from its API key
or role, or its own `priority` up to that) rises by one for every BLAZE_PRIORITY_AGEING_SECONDS it
has waited, so a low-priority request is never starved; equal ones go first come, first served.
A request whose deadline passed while it waited is answered TimedOut without being run.

The torch side (prefill, joined KV caches, per-row sampling, stop strings) is the runtime's
`decoding.Decoder`; this module knows only requests, futures and time.
"""

import collections
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from django.conf import settings

from engines.contract import WINDOW_WAITS, Event
from engines.worker.batcher import OnEvent, past_deadline, retry_after, timed, too_late
from engines.worker.runtimes import LlmRequest

if TYPE_CHECKING:
    from engines.worker.runtimes.decoding import Decoder, Finished
    from engines.worker.runtimes.llamacpp import LlamaDecoder

CANCELLED = {"text": "", "finish_reason": "cancelled", "prompt_tokens": 0, "completion_tokens": 0}


class Waiting:
    """A submitted request: `request` (its payload), `on_event` (its stream), `future` (its result)."""

    __slots__ = ("request", "on_event", "future", "arrived", "started", "rows", "priority", "order")

    def __init__(self, request: LlmRequest, on_event: OnEvent | None, order: int) -> None:
        self.request, self.on_event, self.order = request, on_event, order
        self.future: Future[dict[str, Any]] = Future()
        self.arrived = time.monotonic()
        self.started: float | None = None  # when it was admitted to the running batch
        self.rows = 0  # the rows decoding once it joined
        self.priority = request.get("priority") or 0

    def urgency(self, now: float, ageing: float) -> float:
        return self.priority + (now - self.arrived) / ageing

    def emit(self, event: Event) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def cancelled(self) -> bool:
        check = self.request.get("cancelled")
        return check is not None and check()


class ContinuousScheduler:
    """Drives a `Decoder` on a thread of its own; `submit(request, on_event)` returns a Future with the
    request's result. At most `max_batch_size` rows decode together. When nothing runs, a first
    arrival waits up to `max_wait_ms` (restarted by each arrival, up to WINDOW_WAITS waits) for
    others, so a burst is prefilled together.

    `on_admit(request, waited_seconds, rows)` (the rows decoding once it joins), `on_step(rows, seconds)`
    and `on_done(count, seconds, error)` (the run time of requests that finished in one step) feed
    metrics and traces."""

    def __init__(self, decoder: "Decoder | LlamaDecoder", *, max_batch_size: int, max_wait_ms: float,
                 name: str = "scheduler", on_admit: Callable[[LlmRequest, float, int], None] | None = None,
                 on_step: Callable[[int, float], None] | None = None,
                 on_done: Callable[[int, float, BaseException | None], None] | None = None) -> None:
        self.decoder = decoder
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.on_admit, self.on_step, self.on_done = on_admit, on_step, on_done
        self.step_sizes: collections.deque[int] = collections.deque(maxlen=1000)
        self.run_seconds: collections.deque[float] = collections.deque(maxlen=50)  # how long a slot stays taken
        self._waiting: list[Waiting] = []
        self._running: list[Waiting] = []  # the Waiting of each decoder row, in row order
        self._arrivals = 0
        self._closed = False
        self._wake = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, request: LlmRequest, on_event: OnEvent | None = None) -> "Future[dict[str, Any]]":
        with self._wake:
            if self._closed:
                raise RuntimeError("This model is being unloaded; retry the request.")
            self._arrivals += 1
            item = Waiting(request, on_event, self._arrivals)
            self._waiting.append(item)
            self._wake.notify()
        return item.future

    @property
    def pending(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        return len(self._running)

    def retry_after(self) -> int:
        """Seconds until a waiting request may expect a slot: the queue in batches × how long recent
        requests held theirs."""
        return retry_after(self.run_seconds, self.pending, self.max_batch_size)

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._waiting and not self._running and not self._closed:
                    self._wake.wait()
                if self._closed:
                    break
            if not self._running:
                self._gather()
            try:
                self._admit()
                if self._running:
                    self._step()
            except Exception as exc:  # noqa: BLE001 - the model failed: every running request hears why
                self._fail_running(exc)
        unloaded = RuntimeError("The model was unloaded before this request ran; retry it.")
        for item in self._waiting + self._running:
            if not item.future.done():
                item.future.set_exception(unloaded)

    def _gather(self) -> None:
        """With nothing running: wait for a burst to arrive, so it is prefilled together."""
        with self._wake:
            if not self._waiting:
                return
            cap = self._waiting[0].arrived + self.max_wait * WINDOW_WAITS
            while len(self._waiting) < self.max_batch_size and not self._closed:
                last = self._waiting[-1].arrived
                deadline = min(last + self.max_wait, cap)
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._wake.wait(left)

    def _take(self, free: int) -> list[Waiting]:
        """Up to `free` waiting requests, most urgent first; the given-up and the late are answered here."""
        now, wall = time.monotonic(), time.time()
        with self._wake:
            ageing = settings.BLAZE_PRIORITY_AGEING_SECONDS
            ordered = sorted(self._waiting, key=lambda item: (-item.urgency(now, ageing), item.order))
            taken: list[Waiting] = []
            dropped: list[Waiting] = []
            for item in ordered:
                if item.cancelled() or past_deadline(item.request, wall):
                    dropped.append(item)
                elif len(taken) < free:
                    taken.append(item)
            gone = {id(item) for item in taken + dropped}
            self._waiting = [item for item in self._waiting if id(item) not in gone]
        for item in dropped:
            if item.cancelled():
                item.future.set_result(CANCELLED)
            else:
                item.future.set_exception(too_late(now - item.arrived, "a slot"))
        rows = len(self._running) + len(taken)
        for item in taken:
            item.started, item.rows = now, rows
            if self.on_admit:
                self.on_admit(item.request, now - item.arrived, rows)
        return taken

    def _admit(self) -> None:
        free = self.max_batch_size - len(self._running)
        if free <= 0 or not self._waiting:
            return
        taken = self._take(free)
        if not taken:
            return
        self._running.extend(taken)  # before the prefill: a failing prefill fails them with the rest
        refused, finished = self.decoder.join(taken)
        for item, result in refused:
            self._running.remove(item)
            assert item.started is not None  # taken, so admitted
            item.future.set_result(timed(result, item.started - item.arrived, item.rows,
                                         (time.monotonic() - item.started) / max(item.rows, 1)))
        self._retire(finished)

    def _step(self) -> None:
        # A stopped row ends with what it decoded so far (its usage counts it), marked cancelled.
        gone = {row: {**self.decoder.rows[row].result(), "finish_reason": "cancelled"}
                for row, item in enumerate(self._running) if item.cancelled()}
        self._retire(gone)  # a stopped row is not decoded once more
        if not self._running:
            return
        started = time.monotonic()
        rows = len(self._running)
        finished = self.decoder.step()
        seconds = time.monotonic() - started
        self.step_sizes.append(rows)
        if self.on_step:
            self.on_step(rows, seconds)
        self._retire(finished)

    def _retire(self, finished: "Finished") -> None:
        """Answer the rows that finished (a dict of row → result) and drop them from the batch."""
        if not finished:
            return
        now = time.monotonic()
        done = [(self._running[row], result) for row, result in finished.items()]
        self._running = [item for row, item in enumerate(self._running) if row not in finished]
        self.decoder.keep([row for row in range(len(self._running) + len(finished)) if row not in finished])
        ran = []
        for item, result in done:
            assert item.started is not None  # a running row was admitted
            ran.append(now - item.started)
            item.future.set_result(timed(result, item.started - item.arrived, item.rows,
                                         (now - item.started) / max(item.rows, 1)))
        self.run_seconds.extend(ran)
        if self.on_done:
            self.on_done(len(done), sum(ran) / len(ran), None)

    def _fail_running(self, exc: BaseException) -> None:
        failed, self._running = self._running, []
        self.decoder.reset()
        for item in failed:
            if not item.future.done():
                item.future.set_exception(exc)
        if self.on_done and failed:
            self.on_done(len(failed), 0.0, exc)
