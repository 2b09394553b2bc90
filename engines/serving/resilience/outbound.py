"""Outbound caps per remote host: a remote engine's config may cap the requests Blaze sends its host
a second (`max_rps`) and at once (`max_concurrency`), counted in Redis so that every web process
keeps one cap between them.

    limit = OutboundLimit.of(engine)        # None when the engine sets neither
    slot = await limit.aslot(patience=5)    # one of max_concurrency (None without that cap)
    await limit.aturn(patience=5)           # this request's turn under max_rps, slept until
    ...
    await slot.arelease()                   # or slot.release_with(response): when a stream ends

- The rate is a token bucket of one token (`ratelimits`' script, which reserves a turn ahead): requests
  leave 1/max_rps apart, so no second carries more than max_rps, as a host's own per-second window
  counts them. A request reserves its turn in one round trip and sleeps until it, without polling.
  Not `limits`' windows: they only say yes or no, so waiters would poll, all waking at the window's
  reset, and a fixed window lets twice the cap through across its edge.
- The concurrency is a semaphore of leases (`lua/outbound_slots.lua`): a holder renews its lease every
  LEASE_SECONDS / 3 while it holds the slot, so one whose process dies frees it within LEASE_SECONDS.
  Waiters keep their place in a line; the next in line ask again every few milliseconds, the rest
  every POLL_SECONDS.
- A wait longer than `patience` ends in `errors.Overloaded` naming the cap: a route answers it by trying
  its next target, without counting it against the host's breaker; else it is the client's 503.
- Every wait is observed in `blaze_outbound_wait_seconds{engine, cap}` and added to the request's
  `outbound_wait_seconds` in the request log; each refusal counts in `blaze_outbound_refused_total`.
- Redis unreachable: the caps fail open (logged), as the breakers do: they protect a host and must not
  become the outage.
"""

import asyncio
import logging
import math
import random
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis

from core import errors, shared_state
from engines.serving.resilience import resilience_id
from ratelimits.algorithms import TOKEN_BUCKET
from telemetry import metrics, request_log

if TYPE_CHECKING:
    import aiohttp

    from engines.models import Engine

log = logging.getLogger(__name__)

WAIT_BEFORE_FAILOVER_SECONDS = 0.5  # a route's target with others left waits this long for a full host
LEASE_SECONDS = 10
STALE_SECONDS = 2  # a waiter that has not asked for this long has left the line (its process died)
POLL_NEXT_SECONDS, POLL_SECONDS = 0.01, 0.1  # how often the next in line and the others ask again
CAPS = ("max_rps", "max_concurrency")  # the engine config keys

SLOTS = shared_state.Script(Path(__file__).parent / "lua" / "outbound_slots.lua")
_releasing: set[asyncio.Task[None]] = set()  # release tasks started by a response's callback, kept until done


class OutboundLimit:
    """One remote engine's caps on what is sent to its host: `max_rps` requests a second, `max_concurrency`
    at once (either may be None: no cap)."""

    def __init__(self, engine_name: str, *, max_rps: float | None = None, max_concurrency: int | None = None) -> None:
        self.engine, self.target = engine_name, resilience_id(engine_name)
        self.max_rps, self.max_concurrency = max_rps, max_concurrency

    @classmethod
    def of(cls, engine: "Engine") -> "OutboundLimit | None":
        """The engine's caps from its config, or None when it sets none."""
        caps = {name: engine.config.get(name) for name in CAPS} if engine.config else {}
        return cls(engine.name, **caps) if any(caps.values()) else None

    async def aslot(self, *, patience: float) -> "Slot | None":
        """One of the host's `max_concurrency` slots, waited for in line at most `patience` seconds; None
        without that cap (or while Redis is unreachable). Raises errors.Overloaded past `patience`."""
        if not self.max_concurrency:
            return None
        keys, lease, started = shared_state.outbound_slot_keys(self.target), uuid.uuid4().hex, time.monotonic()
        try:
            while True:
                granted, ahead = await SLOTS.arun(
                    keys, ["acquire", lease, self.max_concurrency, LEASE_SECONDS, STALE_SECONDS])
                waited = time.monotonic() - started
                if int(granted):
                    break
                if waited >= patience:
                    raise self._full("max_concurrency", f"{self.max_concurrency} requests at once are in flight "
                                     f"to its host; none ended within {waited:.1f} s", retry_after=1)
                pause = POLL_NEXT_SECONDS if int(ahead) < self.max_concurrency else POLL_SECONDS
                await asyncio.sleep(min(patience - waited, random.uniform(pause / 2, pause)))
        except redis.RedisError as exc:
            log.warning("Outbound cap of %s fails open: Redis is unreachable (%s)", self.engine, exc)
            return None
        except BaseException:
            await _quietly(lambda pipe: [pipe.zrem(key, lease) for key in keys[1:]])  # leave the line
            raise
        self._waited("max_concurrency", waited)
        return Slot(keys, lease)

    async def aturn(self, *, patience: float) -> None:
        """This request's turn under `max_rps`: reserved now and slept until, at most `patience` seconds
        ahead; raises errors.Overloaded (sleeping not at all) when the turn is further off."""
        if not self.max_rps:
            return
        try:
            allowed, _, _, wait, retry_after, _ = await TOKEN_BUCKET.arun(
                [shared_state.outbound_rate_key(self.target)], [self.max_rps, 1, 1, max(patience, 0)])
        except redis.RedisError as exc:
            log.warning("Outbound cap of %s fails open: Redis is unreachable (%s)", self.engine, exc)
            return
        if not int(allowed):
            raise self._full("max_rps", f"its next turn is {float(retry_after):.1f} s away, later than this "
                             f"request can wait", retry_after=float(retry_after))
        self._waited("max_rps", float(wait))
        if float(wait) > 0:
            await asyncio.sleep(float(wait))

    def _waited(self, cap: str, seconds: float) -> None:
        metrics.OUTBOUND_WAIT.labels(self.engine, cap).observe(seconds)
        entry = request_log.current()
        if seconds > 0 and entry is not None:
            request_log.note(outbound_wait_seconds=round(entry.get("outbound_wait_seconds", 0) + seconds, 4))

    def _full(self, cap: str, why: str, *, retry_after: float) -> errors.Overloaded:
        metrics.OUTBOUND_REFUSED.labels(self.engine, cap).inc()
        cap_words = (f"{self.max_rps:g} requests a second" if cap == "max_rps"
                     else f"{self.max_concurrency} requests at once")
        return errors.Overloaded(f"Engine '{self.engine}' is at its cap of {cap_words} (config.{cap}): {why}.",
                                 retry_after=max(1, math.ceil(retry_after)), code="outbound_limit")


class Slot:
    """A concurrency slot held under a lease, renewed every LEASE_SECONDS / 3 until `arelease()`."""

    _response: "aiohttp.ClientResponse | None"

    def __init__(self, keys: list[str], lease: str) -> None:
        self.keys, self.lease, self.released, self._response = keys, lease, False, None
        self._loop = asyncio.get_running_loop()
        self._renewal = self._loop.create_task(self._renew())

    def release_with(self, response: "aiohttp.ClientResponse") -> None:
        """Hold the slot until the aiohttp `response` (a stream, its body unread) is released or closed."""
        self._response = response
        if response.connection is None:  # read already
            self._release_soon()
        else:
            response.connection.add_callback(self._release_soon)

    async def arelease(self) -> None:
        if self.released:
            return
        self.released = True
        if self._renewal is not asyncio.current_task():
            self._renewal.cancel()
        await _quietly(lambda pipe: pipe.zrem(self.keys[0], self.lease))  # else the lease runs out by itself

    def _release_soon(self) -> None:
        task = self._loop.create_task(self.arelease())
        _releasing.add(task)
        task.add_done_callback(_releasing.discard)

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(LEASE_SECONDS / 3)
            if self._response is not None and self._response.closed:  # in case its callback never ran
                return await self.arelease()
            try:
                held = await SLOTS.arun(self.keys, ["renew", self.lease, 0, LEASE_SECONDS, STALE_SECONDS])
            except redis.RedisError as exc:
                log.warning("could not renew an outbound slot's lease (%s)", exc)
                continue
            if not int(held):
                log.warning("an outbound slot's lease ran out while held (%s): its cap may be passed by one "
                            "until this request ends", self.keys[0])
                return


async def _quietly(queue: Callable[[Any], object]) -> None:
    try:
        await shared_state.abatch(queue)
    except redis.RedisError:
        pass
