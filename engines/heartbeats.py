"""The workers as their heartbeats in Redis describe them, read by the web side and the workers alike.

A worker (`engines.worker.host.EngineHost`) beats every BLAZE_HEARTBEAT_SECONDS with what it holds;
one silent for BLAZE_WORKER_LOST_SECONDS is `lost`.
"""

import json
import time
from typing import Any

from django.conf import settings

from core import shared_state


def live_workers() -> list[dict[str, Any]]:
    """Heartbeats of workers seen within BLAZE_WORKER_LOST_SECONDS; lost ones have `lost: True`."""
    redis = shared_state.client()
    names = sorted(redis.smembers(shared_state.workers_key()))
    if not names:
        return []
    now, workers = time.time(), []
    for name, raw in zip(names, redis.mget([shared_state.worker_key(n) for n in names])):
        if raw is None:
            redis.srem(shared_state.workers_key(), name)
            continue
        info = json.loads(raw)
        info["lost"] = now - info["last_seen"] > settings.BLAZE_WORKER_LOST_SECONDS
        workers.append(info)
    return workers


def worker_info(worker_id: str) -> dict[str, Any] | None:
    raw = shared_state.client().get(shared_state.worker_key(worker_id))
    if raw is None:
        return None
    info = json.loads(raw)
    info["lost"] = time.time() - info["last_seen"] > settings.BLAZE_WORKER_LOST_SECONDS
    return info


def holding(name: str, except_worker: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    """(worker id, cache entry) of each live worker that holds engine `name`'s model."""
    return [(worker["id"], entry) for worker in live_workers() if not worker["lost"] and worker["id"] != except_worker
            for entry in worker["cache"] if entry["engine"] == name]


def loaded_anywhere(name: str, except_worker: str | None = None) -> bool:
    return bool(holding(name, except_worker))


def rank_workers(workers: list[dict[str, Any]], engine_name: str) -> list[dict[str, Any]]:
    """The workers sorted for a request to `engine_name`: those holding its model first; when none
    does (a cold start), those whose cache has room for it without evicting (its size from its last
    load, on any worker); then the least busy (then by name, so that equals always rank alike)."""

    def holds(worker: dict[str, Any]) -> bool:
        return any(entry["engine"] == engine_name for entry in worker["cache"])

    needs = 0 if any(holds(worker) for worker in workers) else (last_load(engine_name) or {}).get("bytes", 0)

    def rank(worker: dict[str, Any]) -> tuple[bool, bool, int, str]:
        room = worker.get("cache_budget_bytes", 0) - worker.get("cache_used_bytes", 0) >= needs
        return (not holds(worker), not room, worker["in_flight"], worker["id"])

    return sorted(workers, key=rank)


def record_load(engine_name: str, seconds: float, size: int) -> None:
    """A worker has just loaded the engine's model: how long it took and its size in memory."""
    record = json.dumps({"seconds": seconds, "bytes": size})
    shared_state.client().set(shared_state.engine_load_key(engine_name), record)


def last_load(engine_name: str) -> dict[str, Any] | None:
    """The engine's last load on any worker, {"seconds", "bytes"} (the next cold start's estimate, and
    the room a worker needs for it); None when no worker has loaded it yet."""
    raw = shared_state.client().get(shared_state.engine_load_key(engine_name))
    return json.loads(raw) if raw else None
