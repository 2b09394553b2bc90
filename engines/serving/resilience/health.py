"""The health of each target (a remote host, an engine on a worker), shared by every process through Redis.

Fed two ways: active checks (`check_once`, run periodically by `manage.py check_upstreams` for remote
engines) and passive outcomes of real traffic (`HealthMonitor.record`). Each outcome updates the state
atomically (a Lua script):

- UNKNOWN: nothing recorded yet.
- UNHEALTHY: the last BLAZE_HEALTH_UNHEALTHY_AFTER (3) outcomes all failed.
- DEGRADED: more than BLAZE_HEALTH_DEGRADED_ERROR_RATE (20%) of the last BLAZE_HEALTH_WINDOW (20)
  outcomes failed, or the response-time EWMA is over BLAZE_HEALTH_DEGRADED_LATENCY_SECONDS (30).
- HEALTHY: otherwise. A recovering target passes through DEGRADED until its failures leave the window.

Response times come from successful outcomes only (checks and traffic alike): an EWMA (weight 0.3 on
the newest) and p50/p95 over the last 100. Uptime is the share of active checks that passed, over all
checks and over the last 100 (kept in a bounded Redis list for the pages).

When Redis cannot be reached, outcomes are dropped (logged) and every state reads UNKNOWN: health
informs routing, it must not stop it.
"""

import asyncio
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis
from asgiref.sync import sync_to_async
from django.conf import settings

from core import shared_state
from core.retry import UpstreamError
from engines.models import Engine
from engines.serving.resilience import http, resilience_id

log = logging.getLogger(__name__)

HEALTHY, DEGRADED, UNHEALTHY, UNKNOWN = "healthy", "degraded", "unhealthy", "unknown"
EWMA_ALPHA = 0.3
OUTCOMES_KEPT = 100
CHECKS_KEPT = 100


SCRIPT = shared_state.Script(Path(__file__).parent / "lua" / "health.lua")


class HealthMonitor:
    """The health record of one target. Thresholds default to the BLAZE_HEALTH_* settings; creating
    one is cheap, so build it where you need it with the same arguments everywhere for one target."""

    def __init__(self, target: str, *, unhealthy_after: int | None = None, degraded_error_rate: float | None = None,
                 degraded_latency: float | None = None, window: int | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.target = str(target)
        self.unhealthy_after = unhealthy_after or settings.BLAZE_HEALTH_UNHEALTHY_AFTER
        self.degraded_error_rate = (settings.BLAZE_HEALTH_DEGRADED_ERROR_RATE if degraded_error_rate is None
                                    else degraded_error_rate)
        self.degraded_latency = degraded_latency or settings.BLAZE_HEALTH_DEGRADED_LATENCY_SECONDS
        self.window = min(window or settings.BLAZE_HEALTH_WINDOW, OUTCOMES_KEPT)
        self.clock = clock

    def __repr__(self) -> str:
        return f"HealthMonitor({self.target!r})"

    def record(self, success: bool, latency: float | None = None, *, detail: str = "") -> str:
        """Count one outcome of real traffic (`latency` in seconds, if known). Returns the new state."""
        return self._record(success, latency, detail, check=False)

    def record_check(self, success: bool, latency: float | None, *, detail: str = "") -> str:
        """Count one active check; it is also kept in the last-100 list. Returns the new state."""
        return self._record(success, latency, detail, check=True)

    def state(self) -> str:
        """HEALTHY, DEGRADED, UNHEALTHY or UNKNOWN (also when Redis cannot be reached)."""
        return states([self.target])[self.target]

    def snapshot(self) -> dict[str, Any]:
        """State, since when, consecutive failures, error rate over the window, latency (EWMA, p50, p95),
        uptime, the last error, and the last 100 checks (newest first, each {at, ok, latency, detail})."""
        return _snapshot(self.target, self.window)

    def reset(self) -> None:
        """Forget everything about the target: its state goes back to UNKNOWN."""
        redis = shared_state.client()
        redis.delete(shared_state.health_key(self.target), shared_state.health_outcomes_key(self.target),
                     shared_state.health_checks_key(self.target))

    def queue(self, pipe: Any, success: bool, latency: float | None = None) -> None:
        """Put record() on a `shared_state.batch` pipeline; its reply goes to `read`."""
        SCRIPT.queue(pipe, *self._call(self.clock(), success, latency, "", ""))

    def read(self, reply: Sequence[str], success: bool) -> str:
        """The state after a queued record."""
        previous, state = reply
        return self._changed(previous, state, success, "")

    async def arecord_check(self, success: bool, latency: float | None, *, detail: str = "") -> str:
        return await sync_to_async(self.record_check, thread_sensitive=False)(success, latency, detail=detail)

    async def astate(self) -> str:
        return await sync_to_async(self.state, thread_sensitive=False)()

    async def asnapshot(self) -> dict[str, Any]:
        return await sync_to_async(self.snapshot, thread_sensitive=False)()

    def _record(self, success: bool, latency: float | None, detail: str, check: bool) -> str:
        now = self.clock()
        entry = json.dumps({"at": now, "ok": bool(success), "latency": latency, "detail": detail}) if check else ""
        try:
            previous, state = SCRIPT.run(*self._call(now, success, latency, detail, entry))
        except redis.RedisError as exc:
            return self._unreachable(exc)
        return self._changed(previous, state, success, detail)

    def _call(self, now: float, success: bool, latency: float | None, detail: str,
              entry: str) -> tuple[list[str], list[Any]]:
        """The script's (keys, args) for one outcome (`entry`: the check to keep, or "")."""
        return (
            [shared_state.health_key(self.target), shared_state.health_outcomes_key(self.target),
             shared_state.health_checks_key(self.target), shared_state.health_targets_key()],
            [now, 1 if success else 0, "" if latency is None else latency, entry, detail[:500], EWMA_ALPHA,
             self.window, self.unhealthy_after, self.degraded_error_rate, self.degraded_latency,
             OUTCOMES_KEPT, CHECKS_KEPT, self.target],
        )

    def _unreachable(self, exc: redis.RedisError) -> str:
        log.warning("Health of %s not recorded: Redis is unreachable (%s)", self.target, exc)
        return UNKNOWN

    def _changed(self, previous: str, state: str, success: bool, detail: str) -> str:
        if state != previous:
            log.log(logging.INFO if state == HEALTHY else logging.WARNING, "%s is now %s (was %s)%s",
                    self.target, state, previous, f": {detail}" if detail and not success else "")
        return state


def _percentile(ordered: Sequence[float], share: float) -> float | None:
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)] if ordered else None


def _number(raw: Mapping[str, str], name: str) -> float | None:
    return float(raw[name]) if name in raw else None


def _snapshot(target: str, window: int) -> dict[str, Any]:
    pipe = shared_state.client().pipeline(transaction=False)
    pipe.hgetall(shared_state.health_key(target))
    pipe.lrange(shared_state.health_outcomes_key(target), 0, -1)
    pipe.lrange(shared_state.health_checks_key(target), 0, -1)
    raw, outcomes, checks = pipe.execute()
    checks = [json.loads(entry) for entry in checks]
    latencies = sorted(float(entry[2:]) for entry in outcomes if entry.startswith("1:") and entry[2:])
    recent, total = outcomes[:window], int(raw.get("checks", 0))
    return {
        "target": target, "state": raw.get("state", UNKNOWN), "since": _number(raw, "since"),
        "consecutive_failures": int(raw.get("consecutive_failures", 0)),
        "latency_ewma": _number(raw, "latency_ewma"),
        "latency_p50": _percentile(latencies, 0.5), "latency_p95": _percentile(latencies, 0.95),
        "error_rate": sum(entry.startswith("0:") for entry in recent) / len(recent) if recent else None,
        "uptime_percent": 100 * int(raw.get("checks_ok", 0)) / total if total else None,
        "recent_uptime_percent": 100 * sum(check["ok"] for check in checks) / len(checks) if checks else None,
        "first_seen_at": _number(raw, "first_seen_at"), "last_check_at": _number(raw, "last_check_at"),
        "last_success_at": _number(raw, "last_success_at"), "last_failure_at": _number(raw, "last_failure_at"),
        "last_error": raw.get("last_error", ""),
        "checks": checks,
    }


def states(targets: Iterable[str]) -> dict[str, str]:
    """{target: state} for many targets in one round trip (UNKNOWN for those never recorded)."""
    targets = [str(target) for target in targets]
    pipe = shared_state.client().pipeline(transaction=False)
    for target in targets:
        pipe.hget(shared_state.health_key(target), "state")
    try:
        found = pipe.execute()
    except redis.RedisError as exc:
        log.warning("Health states unknown: Redis is unreachable (%s)", exc)
        found = [None] * len(targets)
    return {target: state or UNKNOWN for target, state in zip(targets, found)}


def down_by_check(targets: Iterable[str], now: float | None = None) -> set[str]:
    """The targets the router should skip: UNHEALTHY by an active check (its latest failure was a
    check) made within the last three check intervals. Failures of real traffic alone never take a
    target out here: the circuit breaker answers for those, and lets a trial through to learn of a
    recovery, which a target nobody sends to could not show. A stale verdict (the checker stopped)
    expires for the same reason."""
    targets = [str(target) for target in targets]
    try:
        rows = shared_state.batch(lambda pipe: queue_checks(pipe, targets))
    except redis.RedisError as exc:
        log.warning("Health unknown to the router: Redis is unreachable (%s)", exc)
        return set()
    return down_from(targets, rows, now)


def queue_checks(pipe: Any, targets: Iterable[str]) -> None:
    """Put what `down_from` reads on a `shared_state.batch` pipeline: one reply per target."""
    for target in targets:
        pipe.hmget(shared_state.health_key(target), "state", "last_check_at", "last_failure_at")


def down_from(targets: Iterable[str], rows: Iterable[Sequence[str | None]], now: float | None = None) -> set[str]:
    """`down_by_check` of the replies `queue_checks` queued."""
    now = time.time() if now is None else now
    fresh = 3 * settings.BLAZE_HEALTH_CHECK_INTERVAL
    return {
        str(target) for target, (state, checked, failed) in zip(targets, rows)
        if state == UNHEALTHY and checked and checked == failed and now - float(checked) <= fresh
    }


def snapshots() -> list[dict[str, Any]]:
    """Snapshots of every target with a health record, sorted by target."""
    targets = sorted(shared_state.client().smembers(shared_state.health_targets_key()))
    return [_snapshot(target, settings.BLAZE_HEALTH_WINDOW) for target in targets]


def http_probe(base_url: str, api_key: str = "") -> Callable[[], Awaitable[None]]:
    """A probe for an OpenAI-compatible host: `GET {base_url}/models` (base_url ends in /v1), or when
    that is 404, `GET /health` at the host's root (vLLM, TGI). Any answer but a 2xx fails it."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    parts = urlsplit(base_url)

    async def probe() -> None:
        response = await http.request("GET", f"{base_url.rstrip('/')}/models", headers=headers, attempts=1)
        if response.status == 404:
            response = await http.request("GET", f"{parts.scheme}://{parts.netloc}/health", headers=headers, attempts=1)
        if response.status >= 300:
            raise UpstreamError(response.status, (await response.read()).decode(errors="replace"))

    return probe


async def check_once(monitor: HealthMonitor, probe: Callable[[], Awaitable[object]], *,
                     timeout: float | None = None) -> dict[str, Any]:
    """Run `probe` (an async callable that raises when the target is not well) within `timeout` seconds
    (BLAZE_HEALTH_CHECK_TIMEOUT), record the result as an active check, and return it:
    {"ok", "latency", "detail", "state"}."""
    timeout = settings.BLAZE_HEALTH_CHECK_TIMEOUT if timeout is None else timeout
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            await probe()
        ok, detail = True, ""
    except TimeoutError:
        ok, detail = False, f"No answer within {timeout:g} s."
    except Exception as exc:  # noqa: BLE001 - any failure of the probe is the finding, not an error of the checker
        ok, detail = False, f"{type(exc).__name__}: {exc}"
    latency = time.monotonic() - started
    state = await monitor.arecord_check(ok, latency, detail=detail)
    return {"ok": ok, "latency": latency, "detail": detail, "state": state}


async def check_remote_engines() -> list[tuple[Engine, dict[str, Any]]]:
    """One active check of every enabled remote engine, concurrently: [(engine, check result)]."""
    engines = await sync_to_async(lambda: list(Engine.objects.filter(backend=Engine.Backend.REMOTE, enabled=True)))()
    results = await asyncio.gather(*(
        check_once(HealthMonitor(resilience_id(engine.name)), http_probe(engine.base_url, engine.api_key))
        for engine in engines
    ))
    return list(zip(engines, results))
