"""Circuit breakers whose state lives in Redis, so every web process and worker sees the same breaker.

Ours, not a library's: no Python breaker shares its state through Redis atomically (pybreaker's Redis
storage changes state by separate reads and writes, and has no failure-rate window or bounded
half-open trials). Here each step is one Lua script, so processes recording outcomes at once can
neither lose a count nor both move the breaker.

    CLOSED ──failure_threshold consecutive failures, or failure_rate of the last `window` calls
      ▲      (once min_calls are counted)──► OPEN
      │                                       │ reset_timeout seconds
      │ success_threshold trial successes     ▼
      └──────────────────────────────── HALF_OPEN ──a trial fails──► OPEN

In HALF_OPEN at most `half_open_max_calls` trial calls run at once; a trial that never reports stops
holding its slot after reset_timeout. Only trials count there: a call let through before the breaker
opened says nothing about the recovery. Outcomes recorded while OPEN are ignored.

Use:

    breaker = CircuitBreaker(resilience_id(engine.name))
    async with breaker.guard(is_failure=is_retriable):  # raises BreakerOpen when refused
        response = await call_upstream()

or by hand: `permit = breaker.allow()` then `breaker.record_success(permit)` /
`breaker.record_failure(permit)` (or `release(permit)` when the call was abandoned).

The async methods (`a…`) run the same script on the running loop's asyncio client
(`shared_state.loop_client()`), sparing the serving path a trip to the thread pool; the reads behind
the pages (`astate`, `asnapshot`) run the sync ones on a worker thread.

When Redis cannot be reached, a breaker fails open: it lets calls through and counts nothing (logged),
because it protects targets and must not become the outage itself.

Times come from `clock` (time.time by default; tests inject one), so hosts should keep their clocks
in sync (NTP): skew shifts when a breaker half-opens by that much.
"""

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import EllipsisType, TracebackType
from typing import Any

import redis
from asgiref.sync import sync_to_async
from django.conf import settings

from core import shared_state
from telemetry import metrics

log = logging.getLogger(__name__)

CLOSED, HALF_OPEN, OPEN = "closed", "half_open", "open"
STATE_CODES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}  # the values of metrics.BREAKER_STATE
TRANSITIONS_KEPT = 50


class BreakerOpen(Exception):
    """The breaker refused the call. `retry_after` is the seconds until it would let one through."""

    def __init__(self, target: str, state: str, retry_after: float) -> None:
        self.target, self.state, self.retry_after = target, state, max(0.0, retry_after)
        super().__init__(
            f"The circuit breaker for '{target}' is {state.replace('_', '-')}; "
            f"next try in {self.retry_after:.1f} s."
        )


@dataclass(frozen=True)
class Permit:
    """Leave to make one call; hand it back to record_success / record_failure / release.
    `trial` is set when the call is a half-open trial."""

    target: str
    trial: str = ""


SCRIPT = shared_state.Script(Path(__file__).parent / "lua" / "breaker.lua")


class CircuitBreaker:
    """A breaker for one target (an engine replica, a remote host), shared through Redis.

    Settings give the defaults (BLAZE_BREAKER_*); `failure_rate=None` turns the rate rule off. Creating
    one is cheap: build it where you need it, with the same arguments everywhere for one target.
    """

    def __init__(self, target: str, *, failure_threshold: int | None = None,
                 failure_rate: float | None | EllipsisType = ..., window: int | None = None,
                 min_calls: int | None = None, reset_timeout: float | None = None,
                 success_threshold: int | None = None, half_open_max_calls: int | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.target = str(target)
        self.failure_threshold = failure_threshold or settings.BLAZE_BREAKER_FAILURE_THRESHOLD
        self.failure_rate = settings.BLAZE_BREAKER_FAILURE_RATE if failure_rate is ... else failure_rate
        self.window = window or settings.BLAZE_BREAKER_WINDOW
        self.min_calls = min_calls or settings.BLAZE_BREAKER_MIN_CALLS
        self.reset_timeout = settings.BLAZE_BREAKER_RESET_SECONDS if reset_timeout is None else reset_timeout
        self.success_threshold = success_threshold or settings.BLAZE_BREAKER_SUCCESS_THRESHOLD
        self.half_open_max_calls = half_open_max_calls or settings.BLAZE_BREAKER_HALF_OPEN_MAX_CALLS
        self.clock = clock

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.target!r})"

    def allow(self) -> Permit:
        """A Permit to make one call, or BreakerOpen (with `retry_after`) when the breaker refuses."""
        trial = uuid.uuid4().hex
        return self._permit(trial, *self._step("allow", trial))

    def _permit(self, trial: str, state: str, granted: int, retry_after: float) -> Permit:
        if not granted:
            raise BreakerOpen(self.target, state, retry_after)
        return Permit(self.target, trial if state == HALF_OPEN else "")

    def record_success(self, permit: Permit | None = None) -> str:
        """Count a call that worked (or failed for the caller's fault, e.g. a 4xx). Returns the state."""
        return self._step("success", permit.trial if permit else "")[0]

    def record_failure(self, permit: Permit | None = None) -> str:
        """Count a call that failed for the target's fault (5xx, timeout, refused). Returns the state."""
        return self._step("failure", permit.trial if permit else "")[0]

    def release(self, permit: Permit) -> None:
        """Give back a permit whose call was abandoned (cancelled) without counting it."""
        if permit.trial:
            try:
                shared_state.client().zrem(shared_state.breaker_trials_key(self.target), permit.trial)
            except redis.RedisError:
                pass  # the trial's slot frees itself after reset_timeout

    def state(self) -> str:
        """CLOSED, HALF_OPEN or OPEN (an OPEN breaker past its reset_timeout turns HALF_OPEN here)."""
        return self._step("peek")[0]

    def reset(self) -> str:
        """Close the breaker and forget its counts (an operator's action)."""
        return self._step("reset")[0]

    def snapshot(self) -> dict[str, Any]:
        """What the pages show: state, counts, when it opened, when it lets the next call probe, and
        the recent transitions (newest first, each {at, from, to, reason}). Reads only."""
        return _snapshot(self.target, self.clock())

    def guard(self, *, is_failure: Callable[[BaseException], bool] | None = None, permit: Permit | None = None,
              record_success: bool = True) -> "_Guard":
        """A context manager (sync `with` or `async with`) around one call: allow() on entry (raising
        BreakerOpen) unless given the `permit` it granted already, then record the outcome. An
        exception counts as a failure when `is_failure(exc)` says so (default: every exception) and as
        a success otherwise (the target answered; the caller erred); a cancellation only gives the
        permit back. `record_success=False`: a call that returns is left for the holder of `permit`
        to record."""
        return _Guard(self, is_failure or (lambda exc: True), permit, record_success)

    async def aallow(self) -> Permit:
        trial = uuid.uuid4().hex
        return self._permit(trial, *await self._astep("allow", trial))

    async def arecord_success(self, permit: Permit | None = None) -> str:
        return (await self._astep("success", permit.trial if permit else ""))[0]

    async def arecord_failure(self, permit: Permit | None = None) -> str:
        return (await self._astep("failure", permit.trial if permit else ""))[0]

    async def arelease(self, permit: Permit) -> None:
        if permit.trial:
            try:
                await shared_state.loop_client().zrem(shared_state.breaker_trials_key(self.target), permit.trial)
            except redis.RedisError:
                pass  # the trial's slot frees itself after reset_timeout

    async def astate(self) -> str:
        return await sync_to_async(self.state, thread_sensitive=False)()

    async def asnapshot(self) -> dict[str, Any]:
        return await sync_to_async(self.snapshot, thread_sensitive=False)()

    def queue(self, pipe: Any, op: str, permit: Permit | None = None) -> None:
        """Put one step ("peek", "success", "failure") on a `shared_state.batch` pipeline; its reply
        goes to `read`."""
        SCRIPT.queue(pipe, *self._call(op, permit.trial if permit else ""))

    def read(self, reply: Sequence[Any]) -> str:
        """The state after a queued step (its transitions counted in metrics)."""
        return self._counted(reply)[0]

    def queue_allow(self, pipe: Any) -> str:
        """Put allow() on a `shared_state.batch` pipeline; returns the trial id that `permit` takes
        with the reply."""
        trial = uuid.uuid4().hex
        SCRIPT.queue(pipe, *self._call("allow", trial))
        return trial

    def permit(self, trial: str, reply: Sequence[Any]) -> Permit:
        """What allow() would have returned, from a queued allow's reply: a Permit, or BreakerOpen."""
        return self._permit(trial, *self._counted(reply))

    def _step(self, op: str, trial: str = "") -> tuple[str, int, float]:
        try:
            reply = SCRIPT.run(*self._call(op, trial))
        except redis.RedisError as exc:
            return self._unreachable(op, exc)
        return self._counted(reply)

    async def _astep(self, op: str, trial: str = "") -> tuple[str, int, float]:
        try:
            reply = await SCRIPT.arun(*self._call(op, trial))
        except redis.RedisError as exc:
            return self._unreachable(op, exc)
        return self._counted(reply)

    def _unreachable(self, op: str, exc: redis.RedisError) -> tuple[str, int, float]:
        if op == "reset":
            raise exc
        log.warning("Circuit breaker %s fails open: Redis is unreachable (%s)", self.target, exc)
        return CLOSED, 1, 0.0

    def _counted(self, reply: Sequence[Any]) -> tuple[str, int, float]:
        """The script's reply as (state, granted, retry_after), its transitions counted in metrics."""
        state, granted, retry_after, changes = reply[0], int(reply[1]), float(reply[2]), reply[3:]
        for from_state, to_state in zip(changes[::2], changes[1::2]):
            metrics.BREAKER_TRANSITIONS.labels(self.target, from_state, to_state).inc()
        metrics.BREAKER_STATE.labels(self.target).set(STATE_CODES[state])
        return state, granted, retry_after

    def _call(self, op: str, trial: str) -> tuple[list[str], list[Any]]:
        """The script's (keys, args) for one step."""
        return (
            [shared_state.breaker_key(self.target), shared_state.breaker_window_key(self.target),
             shared_state.breaker_trials_key(self.target), shared_state.breaker_transitions_key(self.target),
             shared_state.breakers_key()],
            [op, self.clock(), self.failure_threshold,
             2 if self.failure_rate is None else self.failure_rate,  # a rate over 1 never trips
             self.window, self.min_calls, self.reset_timeout, self.success_threshold,
             self.half_open_max_calls, trial, TRANSITIONS_KEPT, self.target],
        )


def states(breakers: Iterable[CircuitBreaker]) -> dict[str, str]:
    """{target: state} of many breakers in one round trip, as each one's state() would say (an OPEN
    breaker past its reset_timeout turns HALF_OPEN). All CLOSED when Redis is unreachable (fail open)."""
    breakers = list(breakers)

    def queue(pipe: Any) -> None:
        for breaker in breakers:
            breaker.queue(pipe, "peek")

    try:
        replies = shared_state.batch(queue)
    except redis.RedisError as exc:
        log.warning("Circuit breakers fail open: Redis is unreachable (%s)", exc)
        return {breaker.target: CLOSED for breaker in breakers}
    return {breaker.target: breaker.read(reply) for breaker, reply in zip(breakers, replies)}


class _Guard:
    def __init__(self, breaker: CircuitBreaker, is_failure: Callable[[BaseException], bool], permit: Permit | None,
                 record_success: bool) -> None:
        self.breaker, self.is_failure, self.permit, self.record_success = breaker, is_failure, permit, record_success

    def __enter__(self) -> Permit:
        self.permit = self.permit or self.breaker.allow()
        return self.permit

    def _ending(self, exc: BaseException | None) -> str | None:
        """The breaker's method for how the call ended: a success (the target answered, even if the
        caller erred), a failure, or a cancellation (the permit is only given back); None when a
        success is left to the permit's holder."""
        if exc is None:
            return "record_success" if self.record_success else None
        if not isinstance(exc, Exception):
            return "release"
        return "record_failure" if self.is_failure(exc) else "record_success"

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if ending := self._ending(exc):
            getattr(self.breaker, ending)(self.permit)

    async def __aenter__(self) -> Permit:
        self.permit = self.permit or await self.breaker.aallow()
        return self.permit

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if ending := self._ending(exc):
            await getattr(self.breaker, "a" + ending)(self.permit)


def _snapshot(target: str, now: float) -> dict[str, Any]:
    pipe = shared_state.client().pipeline(transaction=False)
    pipe.hgetall(shared_state.breaker_key(target))
    pipe.llen(shared_state.breaker_window_key(target))
    pipe.zcard(shared_state.breaker_trials_key(target))
    pipe.lrange(shared_state.breaker_transitions_key(target), 0, -1)
    raw, calls, trials, transitions = pipe.execute()
    state = raw.get("state", CLOSED)
    opened_at = float(raw["opened_at"]) if state != CLOSED else None
    probe_at = float(raw["probe_at"]) if state == OPEN else None
    if probe_at is not None and now >= probe_at:
        state, probe_at = HALF_OPEN, None  # what the next call will find; the script records the move then
    return {
        "target": target, "state": state,
        "consecutive_failures": int(raw.get("failures", 0)),
        "window_calls": calls, "window_failures": int(raw.get("window_failures", 0)),
        "trial_successes": int(raw.get("successes", 0)), "trials_in_flight": trials,
        "opened_at": opened_at, "next_probe_at": probe_at,
        "changed_at": float(raw["changed_at"]) if "changed_at" in raw else None,
        "transitions": [json.loads(entry) for entry in transitions],
    }


def snapshots(now: float | None = None) -> list[dict[str, Any]]:
    """Snapshots of every breaker Redis knows, sorted by target."""
    now = time.time() if now is None else now
    return [_snapshot(target, now) for target in sorted(shared_state.client().smembers(shared_state.breakers_key()))]
