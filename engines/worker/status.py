"""Engine status as workers see it: INITIALIZING → READY → DEGRADED/FAILED → RECOVERING.

Workers call these as models load, fail, and answer; the status lands on the Engine row (what the
pages show) and recent outcomes in Redis (shared by every worker).
"""

from typing import Any

from core import shared_state
from engines.heartbeats import loaded_anywhere
from engines.models import Engine

RECENT_OUTCOMES = 50
DEGRADED_ERROR_RATE = 0.2


def _set_status(name: str, status: str, detail: str = "") -> None:
    Engine.objects.filter(name=name).exclude(status=status, status_detail=detail).update(
        status=status, status_detail=detail[:500]
    )


def cache_event(hostname: str, event: str, details: dict[str, Any]) -> None:
    name = details["engine"]
    if event == "loading":
        _set_status(name, Engine.Status.INITIALIZING, f"loading on {hostname}")
    elif event == "loaded":
        _set_status(name, Engine.Status.READY)
    elif event in ("unloaded", "evicted", "idle") and not loaded_anywhere(name, except_worker=hostname):
        _set_status(name, Engine.Status.OFFLINE, f"{'idle, unloaded' if event == 'idle' else event} on {hostname}")


def load_failed(name: str, hostname: str, error: str) -> None:
    _set_status(name, Engine.Status.FAILED, f"{hostname}: {error}")


def load_retrying(name: str, hostname: str, attempt: int, error: BaseException | None) -> None:
    _set_status(name, Engine.Status.RECOVERING, f"{hostname}: attempt {attempt} failed ({error}); retrying")


def batch_done(name: str, size: int, seconds: float, error: BaseException | None) -> None:
    """Record a batch's outcome; the recent error rate moves the engine between READY and DEGRADED."""
    redis = shared_state.client()
    stats, outcomes = shared_state.engine_stats_key(name), shared_state.engine_outcomes_key(name)
    pipe = redis.pipeline()
    pipe.hincrby(stats, "batches", 1)
    pipe.hincrby(stats, "requests", size)
    pipe.hincrby(stats, "errors", size if error else 0)
    pipe.hincrbyfloat(stats, "seconds", seconds)
    pipe.hset(stats, "last_batch_size", size)
    pipe.sadd(shared_state.engines_with_stats_key(), name)
    for _ in range(size):
        pipe.lpush(outcomes, 0 if error else 1)
    pipe.ltrim(outcomes, 0, RECENT_OUTCOMES - 1)
    pipe.lrange(outcomes, 0, -1)
    recent = pipe.execute()[-1]
    error_rate = 1 - sum(map(int, recent)) / len(recent)
    if error_rate > DEGRADED_ERROR_RATE:
        _set_status(name, Engine.Status.DEGRADED, f"{error_rate:.0%} of the last {len(recent)} requests failed")
    else:
        Engine.objects.filter(name=name, status=Engine.Status.DEGRADED).update(
            status=Engine.Status.READY, status_detail=""
        )


def engine_stats(name: str) -> dict[str, Any]:
    raw = shared_state.client().hgetall(shared_state.engine_stats_key(name))
    requests = int(raw.get("requests", 0))
    return {
        "requests": requests, "errors": int(raw.get("errors", 0)), "batches": int(raw.get("batches", 0)),
        "mean_batch_size": requests / int(raw["batches"]) if raw.get("batches") else None,
        "success_rate": 1 - int(raw.get("errors", 0)) / requests if requests else None,
    }


