"""Model downloads from a Hugging Face hub, as Redis holds them: read and written by the web side,
which asks for one (engines/services.py), and by the worker that fetches it (engines/worker/download.py).

A download's record is JSON under `shared_state.download_key(id)`, its id in `downloads_key()` (the
newest KEEP). While queued or running the record does not expire: the worker finds its own when it
restarts and goes on with them. Once finished it is kept KEEP_SECONDS, so the Models page shows how
each ended. Cancelling sets `download_cancel_key(id)`: the worker stops at its next chunk.
"""

import json
import time
import uuid
from typing import Literal, TypedDict, cast

from core import shared_state

State = Literal["queued", "running", "done", "failed", "cancelled"]
ACTIVE: tuple[State, ...] = ("queued", "running")
KEEP_SECONDS = 24 * 3600  # a finished download's record
KEEP = 200  # records listed, newest first


class DownloadRecord(TypedDict):
    id: str
    repo: str  # the hub's repository id: "org/name"
    revision: str  # a branch, tag or commit
    worker: str  # the worker (Celery hostname) whose models directory it lands in
    endpoint: str  # the hub the worker fetches from (its HF_ENDPOINT); "" until it starts
    target: str  # the folder on the worker the model lands in; "" until it starts
    state: State
    bytes_done: int
    bytes_total: int | None  # None: the hub did not say
    files_done: int
    files_total: int | None
    rate: float  # bytes a second, over the last few seconds
    eta: float | None  # seconds left at that rate
    error: str  # why it failed, in words an operator can act on
    requested_by: str
    created_at: float  # epoch seconds
    started_at: float | None
    finished_at: float | None


def new(*, repo: str, revision: str, worker: str, requested_by: str) -> DownloadRecord:
    """A queued download's record (not saved: `create` saves it)."""
    return {"id": uuid.uuid4().hex, "repo": repo, "revision": revision, "worker": worker, "endpoint": "",
            "target": "", "state": "queued", "bytes_done": 0, "bytes_total": None, "files_done": 0,
            "files_total": None, "rate": 0.0, "eta": None, "error": "", "requested_by": requested_by,
            "created_at": time.time(), "started_at": None, "finished_at": None}


def create(record: DownloadRecord) -> None:
    """Save a new record and list it; the oldest beyond KEEP leave the list."""
    redis = shared_state.client()
    pipe = redis.pipeline()
    pipe.set(shared_state.download_key(record["id"]), json.dumps(record))
    pipe.zadd(shared_state.downloads_key(), {record["id"]: record["created_at"]})
    pipe.zremrangebyrank(shared_state.downloads_key(), 0, -KEEP - 1)
    pipe.execute()


def save(record: DownloadRecord) -> None:
    """Write the record as it is now; a finished one expires after KEEP_SECONDS."""
    finished = record["state"] not in ACTIVE
    shared_state.client().set(shared_state.download_key(record["id"]), json.dumps(record),
                              ex=KEEP_SECONDS if finished else None)


def forget(download_id: str) -> None:
    shared_state.client().delete(shared_state.download_key(download_id), shared_state.download_cancel_key(download_id))
    shared_state.client().zrem(shared_state.downloads_key(), download_id)


def get(download_id: str) -> DownloadRecord | None:
    raw = shared_state.client().get(shared_state.download_key(download_id))
    return cast(DownloadRecord, json.loads(raw)) if raw else None


def records() -> list[DownloadRecord]:
    """Every listed download, newest first (those whose record expired leave the list)."""
    redis = shared_state.client()
    ids = redis.zrevrange(shared_state.downloads_key(), 0, KEEP - 1)
    if not ids:
        return []
    raws = redis.mget([shared_state.download_key(download_id) for download_id in ids])
    gone = [download_id for download_id, raw in zip(ids, raws, strict=True) if raw is None]
    if gone:
        redis.zrem(shared_state.downloads_key(), *gone)
    return [cast(DownloadRecord, json.loads(raw)) for raw in raws if raw is not None]


def request_cancel(download_id: str) -> None:
    shared_state.client().set(shared_state.download_cancel_key(download_id), 1, ex=KEEP_SECONDS)


def cancel_requested(download_id: str) -> bool:
    return bool(shared_state.client().exists(shared_state.download_cancel_key(download_id)))
