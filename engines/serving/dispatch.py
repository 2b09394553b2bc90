"""From the web process to a worker and back: choose a worker, send the request, relay its events.

A request accepted is answered: when the chosen worker stops beating mid-request, the request is
sent again to another live worker (same seed, so a stream can skip the tokens already relayed), and
an overall deadline ends it with an explicit error rather than a hang.
"""

import logging
import time
import uuid
from collections.abc import AsyncGenerator, Collection
from typing import TYPE_CHECKING, cast

import orjson
from asgiref.sync import sync_to_async
from django.conf import settings
from redis import RedisError

from core import errors, shared_state, tracing
from engines import contract, heartbeats
from engines.celery_app import app
from telemetry import metrics, request_log

if TYPE_CHECKING:
    from engines.models import Engine

log = logging.getLogger(__name__)


def pick_worker(engine_name: str, exclude: Collection[str] = ()) -> str:
    """A live worker for the engine: one that holds it in cache first, then the least busy."""
    candidates = [w for w in heartbeats.live_workers() if not w["lost"] and w["id"] not in exclude]
    if not candidates:
        raise errors.Unavailable("No engine worker is running. Start one with `celery -A blaze_site worker`.")
    return heartbeats.rank_workers(candidates, engine_name)[0]["id"]


def _another_worker(engine_name: str, tried: Collection[str]) -> str | None:
    """A live worker not yet tried (after one refused the request as busy), or None."""
    try:
        return pick_worker(engine_name, exclude=tried)
    except errors.Unavailable:
        return None


def _send(request_id: str, spec: contract.EngineSpecDict, payload: contract.InferPayload, engine_name: str,
          worker_id: str | None = None, exclude: Collection[str] = ()) -> str:
    """Queue the request for `worker_id`, or for the best live worker not in `exclude` (one trip to
    the thread pool for both); returns the worker's id."""
    worker_id = worker_id or pick_worker(engine_name, exclude)
    app.send_task(contract.INFER_TASK, args=[request_id, spec, payload], queue=contract.worker_queue(worker_id),
                  ignore_result=True)  # the answer comes back on the request's stream, not as a task result
    return worker_id


async def run(engine: "Engine", payload: contract.InferPayload, worker_id: str | None = None,
              timeout: float | None = None, pinned: bool = False) -> AsyncGenerator[contract.Event, None]:
    """Yield the request's events (`token`, `progress`, then `done` or `error`), deduplicated across
    a re-dispatch. `worker_id`: the worker the router chose (else the best live one); `pinned`: only
    that worker may run it (a route target pinned to it), so a lost or busy worker ends the request
    here and the route tries its next target; `timeout`: the seconds left to the request (default
    BLAZE_REQUEST_TIMEOUT_SECONDS). Raises errors.Unavailable when no worker can take it,
    errors.TimedOut when the deadline passes."""
    timeout = settings.BLAZE_REQUEST_TIMEOUT_SECONDS if timeout is None else timeout
    # Queue time counts against it in the worker too (cast: mypy types a spread TypedDict union as a plain dict).
    payload = cast(contract.InferPayload, {**payload, "deadline": time.time() + timeout})
    request_id = uuid.uuid4().hex
    arrived = time.monotonic()
    spec = contract.EngineSpec.from_engine(engine).as_dict()
    tried = []
    # Redis only (no database): run on the thread pool, not the one thread Django's ORM calls share.
    worker_id = await sync_to_async(_send, thread_sensitive=False)(request_id, spec, payload, engine.name, worker_id)
    tried.append(worker_id)
    tracing.note(worker=worker_id, request_id=request_id)  # on the attempt's span
    sent_at, logged = time.monotonic(), "group" not in payload  # a group's notes would land in one member's entry

    redis = shared_state.loop_client()
    stream, last_id = contract.response_stream(request_id), "0-0"
    deadline = time.monotonic() + timeout
    relayed, attempt_tokens, last_token_at = 0, 0, arrived
    started = finished = False
    broker_wait = 0.0
    try:
        while True:
            if time.monotonic() > deadline:
                raise errors.TimedOut(f"No answer within {timeout:.0f} s.")
            with tracing.quiet():  # a span per read (a few tokens each) would bury the request's own
                reply = await redis.xread({stream: last_id}, block=1000, count=100)
            if not reply:
                info = await sync_to_async(heartbeats.worker_info, thread_sensitive=False)(worker_id)
                if info is None or info["lost"]:
                    if pinned:
                        raise errors.Unavailable(f"Worker {worker_id}, which this target is pinned to, stopped "
                                                 "beating during the request.")
                    worker_id = await sync_to_async(_send, thread_sensitive=False)(
                        request_id, spec, payload, engine.name, exclude=tried)
                    tried.append(worker_id)
                continue
            for last_id, fields in reply[0][1]:  # noqa: B007 - the cursor: the next read starts after the last entry
                event = orjson.loads(fields["event"])
                kind = event["type"]
                if kind == contract.START:
                    if started and event["worker"] != worker_id:
                        continue  # a late start from a worker we gave up on
                    started, attempt_tokens = True, 0
                    broker_wait = time.monotonic() - sent_at  # in the broker; the worker adds its own wait
                    if logged:
                        request_log.note(queue_seconds=round(broker_wait, 4), worker=event["worker"])
                elif kind == contract.LOADING:
                    if logged:
                        loading = cast(contract.LoadingEvent, event)
                        request_log.note(cold_start=contract.loading_text(loading))
                    yield event
                elif kind == contract.TOKEN:
                    attempt_tokens += 1
                    if attempt_tokens <= relayed:
                        continue  # already relayed by the worker that was lost
                    relayed += 1
                    now = time.monotonic()
                    if relayed == 1:
                        metrics.TIME_TO_FIRST_TOKEN.labels(engine.name).observe(now - arrived)
                        if logged:
                            request_log.note(ttft_seconds=round(now - arrived, 4))
                    else:
                        metrics.INTER_TOKEN_LATENCY.labels(engine.name).observe(now - last_token_at)
                    last_token_at = now
                    yield event
                elif kind == contract.ERROR and event["error"] == errors.WorkerBusy.kind and relayed == 0:
                    retry = None if pinned else await sync_to_async(_another_worker, thread_sensitive=False)(
                        engine.name, tried)
                    if retry is None:
                        finished = True
                        yield event
                        return
                    worker_id = await sync_to_async(_send, thread_sensitive=False)(
                        request_id, spec, payload, engine.name, retry)
                    tried.append(worker_id)
                elif kind in contract.FINAL:
                    finished = True
                    if logged and kind == contract.DONE and "queue_seconds" in event["result"]:
                        request_log.note(queue_seconds=round(event["result"]["queue_seconds"] + broker_wait, 4))
                    if logged and kind == contract.DONE and "load_seconds" in event["result"]:
                        request_log.note(cold_start_seconds=event["result"]["load_seconds"])
                    yield event
                    return
                else:
                    yield event
    finally:
        pipe = redis.pipeline(transaction=False)
        pipe.delete(stream)
        if not finished:  # given up (the client stopped or left, or the deadline passed): the worker stops it
            pipe.set(contract.request_cancelled(request_id), 1, ex=contract.STREAM_TTL_SECONDS)
        try:
            await pipe.execute()
        except RedisError as exc:  # Redis lost mid-request: the stream expires on its own; the error that
            # ended the request (most often Redis's own) goes on, not this one
            log.warning("request %s: could not clean up after it: %s", request_id, exc)
