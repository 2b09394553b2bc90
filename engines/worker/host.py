"""The engine host inside a Celery worker process: its device, model cache and heartbeat.

One `EngineHost` per worker process. Requests run on the worker's threads and meet in the model's
batcher (an LLM's ContinuousScheduler, else its DynamicBatcher); events go back to the web process
through a Redis stream per request. Two bulkheads refuse at once rather than let requests pile up: the
worker's BLAZE_WORKER_MAX_IN_FLIGHT (WorkerBusy, 503) and each engine's `max_queue` (QueueFull, 429).
"""

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, cast

import orjson
import psutil
from django.conf import settings
from tenacity import RetryCallState, Retrying, retry_if_not_exception_type, stop_after_attempt, wait_exponential_jitter

from core import errors, shared_state, tracing
from engines import contract, heartbeats
from engines.contract import (
    CacheRefusal,
    EngineSpec,
    EngineSpecDict,
    Event,
    GroupPayload,
    InferPayload,
    RuntimeLoadError,
)
from engines.worker import catalog, download, status
from engines.worker.batcher import DynamicBatcher, OnEvent
from engines.worker.cache import CacheEntry, ModelCache
from telemetry import metrics
from usage import events as usage_events

log = logging.getLogger(__name__)


def detect_device() -> tuple[str, int, int]:
    try:
        import torch

        if torch.cuda.is_available():
            index = torch.cuda.current_device()
            free, total = torch.cuda.mem_get_info(index)
            return f"cuda:{index}", total, free
    except ImportError:
        pass
    memory = psutil.virtual_memory()
    return "cpu", memory.total, memory.available


def gpu_utilization(device: str) -> int | None:
    """The GPU's busy percentage over the last sample period (NVML, through torch), or None: a CPU
    worker, or no NVML library on this machine."""
    if not device.startswith("cuda"):
        return None
    try:
        import torch

        return torch.cuda.utilization(int(device.split(":")[1]))
    except Exception:  # noqa: BLE001 - pynvml missing or the driver refuses: the dashboard shows "—"
        return None


def default_budget(device: str, total: int) -> int:
    """BLAZE_CACHE_BYTES, else 90% of a GPU's memory or half of the machine's RAM."""
    if settings.BLAZE_CACHE_BYTES:
        return settings.BLAZE_CACHE_BYTES
    return int(total * (0.9 if device.startswith("cuda") else 0.5))


def publish(request_id: str, event: Event) -> None:
    """Append one event to the request's response stream (read by the web process). orjson, and
    numpy arrays as they are: an embedding result is thousands of floats, which the standard json
    module formats several times slower."""
    redis = shared_state.client()
    stream = contract.response_stream(request_id)
    pipe = redis.pipeline()
    pipe.xadd(stream, {"event": orjson.dumps(event, option=orjson.OPT_SERIALIZE_NUMPY)},
              maxlen=100_000, approximate=True)
    pipe.expire(stream, contract.STREAM_TTL_SECONDS)
    pipe.execute()


def _computed(futures: list[Future[Any]], wait: float = 2.0) -> dict[str, Any]:
    """What the rows of a cancelled request computed before they stopped (each stops within a step):
    their counts summed, from the results they end with."""
    total: dict[str, Any] = {"prompt_tokens": 0, "cached_tokens": 0, "completion_tokens": 0, "images": [],
                             "worker_seconds": 0.0}
    for index, future in enumerate(futures):
        try:
            result = future.result(timeout=wait)
        except Exception:  # noqa: BLE001 - stopped without a result: nothing to count for it
            continue
        if not isinstance(result, dict) or "error" in result:
            continue
        if index == 0:  # the rows share one prompt
            total["prompt_tokens"] = result.get("prompt_tokens", 0)
            total["cached_tokens"] = result.get("cached_tokens") or 0
        total["completion_tokens"] += result.get("completion_tokens", 0)
        total["images"] += result.get("images") or []
        total["worker_seconds"] += result.get("worker_seconds", 0.0)
    return total


class EngineHost:
    """This process as an engine host: registers itself, beats, loads models and runs requests."""

    def __init__(self, hostname: str, threads: int | None = None) -> None:
        self.hostname = hostname
        # Below the worker's threads, so the refusal comes at once rather than after a wait in the broker.
        threads = threads or settings.CELERY_WORKER_CONCURRENCY
        self.max_in_flight = settings.BLAZE_WORKER_MAX_IN_FLIGHT or max(1, threads - max(1, threads // 8))
        self.device, self.total_bytes, _ = detect_device()
        self.cache = ModelCache(
            budget_bytes=default_budget(self.device, self.total_bytes), device=self.device,
            on_change=self._cache_changed, on_batch=self._batch_done, on_admit=self._admitted, on_step=self._stepped,
        )
        self.started_at = time.time()
        self._process = psutil.Process()
        self.in_flight = 0  # requests (an embedding group counts each of its own)
        self.tasks = 0  # infer tasks running, each holding one of the worker's threads
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._beat_thread: threading.Thread | None = None

    def queue(self) -> str:
        return contract.worker_queue(self.hostname)

    def describe(self) -> dict[str, Any]:
        _, _, free = detect_device()
        process = self._process
        return {
            "id": self.hostname, "hostname": socket.gethostname(), "pid": os.getpid(), "device": self.device,
            "total_bytes": self.total_bytes, "free_bytes": free, "queue": self.queue(),
            "cache_budget_bytes": self.cache.budget_bytes, "cache_used_bytes": self.cache.used_bytes,
            "cache": self.cache.snapshot(), "in_flight": self.in_flight,
            "started_at": self.started_at, "last_seen": time.time(),
            # CPU since the last beat (100 = one core busy), and resident memory: the dashboard's worker rows.
            "cpu_percent": process.cpu_percent(), "memory_bytes": process.memory_info().rss,
            "gpu_utilization_percent": gpu_utilization(self.device),
        }

    def beat(self) -> None:
        for entry in self.cache.snapshot():
            metrics.QUEUE_DEPTH.labels(entry["engine"]).set(entry["batch_queue"])
        metrics.MODEL_CACHE_BYTES.labels(self.hostname).set(self.cache.used_bytes)
        redis = shared_state.client()
        pipe = redis.pipeline()
        pipe.set(shared_state.worker_key(self.hostname), json.dumps(self.describe()),
                 ex=int(settings.BLAZE_WORKER_LOST_SECONDS * 20))
        pipe.sadd(shared_state.workers_key(), self.hostname)
        pipe.execute()

    def inspect(self, model: str) -> dict[str, Any]:
        """catalog.describe() of `model` here, with whether it fits this worker's cache budget; or
        {"error": why it is not a model this worker can serve}."""
        try:
            facts = catalog.describe(catalog.resolve(model))
        except catalog.CatalogError as exc:
            return {"error": str(exc)}
        return {**facts, "fits": self._fits(facts)}

    def _fits(self, facts: catalog.ModelFacts) -> bool:
        """Whether the model's estimate fits this worker's cache budget (unknown: it may)."""
        return facts["memory_bytes"] is None or facts["memory_bytes"] <= self.cache.budget_bytes

    def publish_catalog(self) -> None:
        """Scan the models directory and the Hugging Face cache, and publish what is there (the Models
        page reads it), each model marked by whether it fits this worker's cache budget."""
        models = [{**facts, "fits": self._fits(facts)}
                  for facts in catalog.scan(settings.BLAZE_MODELS_DIR, catalog.hf_cache())]
        shared_state.client().set(shared_state.worker_catalog_key(self.hostname),
                                  json.dumps({"scanned_at": time.time(), "models": models}),
                                  ex=max(10, int(settings.BLAZE_CATALOG_SECONDS * 3)))

    def download(self, download_id: str) -> bool:
        """Fetch a model from a hub in a thread of its own (engines/worker/download.py), the catalog
        published once it is in place; False when it is already being fetched here."""
        return download.start(download_id, self.hostname, on_done=self.publish_catalog)

    def start(self) -> None:
        def every(seconds: float, work: Callable[[], object], what: str) -> Callable[[], None]:
            def loop() -> None:
                while True:
                    try:
                        work()
                    except Exception:  # a Redis blip or an odd file must not end the loop
                        log.exception("%s failed", what)
                    if self._stop.wait(seconds):
                        return
            return loop

        self._beat_thread = threading.Thread(target=every(settings.BLAZE_HEARTBEAT_SECONDS, self.beat, "heartbeat"),
                                             name="heartbeat", daemon=True)
        self._beat_thread.start()
        # Threads of their own: a large models directory, or a model being unloaded, must not delay the heartbeat.
        threading.Thread(target=every(settings.BLAZE_CATALOG_SECONDS, self.publish_catalog, "model catalog"),
                         name="catalog", daemon=True).start()
        threading.Thread(target=every(1.0, self.cache.unload_idle, "idle unload"), name="keep-alive",
                         daemon=True).start()
        # The downloads under way when this worker last stopped go on from the bytes on its disk.
        threading.Thread(target=download.resume, args=(self.hostname, self.publish_catalog), name="download-resume",
                         daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self.cache.clear()
        redis = shared_state.client()
        redis.delete(shared_state.worker_key(self.hostname), shared_state.worker_catalog_key(self.hostname))
        redis.srem(shared_state.workers_key(), self.hostname)

    def _cache_changed(self, event: str, details: dict[str, Any]) -> None:
        counted = {"loaded": "miss", "evicted": "eviction", "unloaded": "unload", "idle": "idle_unload"}.get(event)
        if counted:
            metrics.MODEL_CACHE_EVENTS.labels(self.hostname, counted).inc()
        if event in ("unloaded", "evicted", "idle"):
            metrics.QUEUE_DEPTH.labels(details["engine"]).set(0)
        if event == "loaded":  # what the next cold start of it is told to expect, on any worker
            try:
                heartbeats.record_load(details["engine"], details["load_seconds"], details["bytes"])
            except Exception:
                log.exception("could not record %s's load time", details["engine"])
        status.cache_event(self.hostname, event, details)
        try:
            self.beat()
        except Exception:
            log.exception("heartbeat after cache change failed")

    def _batch_done(self, engine_name: str, size: int, seconds: float, error: BaseException | None) -> None:
        self.cache.touch(engine_name)  # keep_alive counts from the last answer, not the last arrival
        entry = self.cache.peek(engine_name)
        metrics.INFERENCE_LATENCY.labels(engine_name, entry.spec.kind if entry else "").observe(seconds)
        try:
            status.batch_done(engine_name, size, seconds, error)
        except Exception as exc:  # noqa: BLE001 - Redis or the database away: the model's loop, which calls
            # this, must go on serving (raised there, it ended the scheduler's thread and every later request)
            log.warning("could not record a batch of %s: %s", engine_name, exc)

    @staticmethod
    def _admitted(engine_name: str, request: Any, seconds: float, batch_size: int) -> None:
        priority = request.get("priority", "") if isinstance(request, dict) else ""
        metrics.QUEUE_WAIT.labels(engine_name, str(priority)).observe(seconds)

    @staticmethod
    def _stepped(engine_name: str, rows: int, seconds: float) -> None:
        metrics.BATCH_SIZE.labels(engine_name).observe(rows)

    def model(self, spec: EngineSpec) -> CacheEntry:
        """The engine's cache entry, loading it if need be. A load that fails for a reason that may
        pass (I/O, memory) is retried with backoff and the engine shows RECOVERING meanwhile; a
        configuration error (RuntimeLoadError) or a model too big for the cache fails at once."""
        def before_sleep(state: RetryCallState) -> None:
            assert state.outcome is not None  # it follows a failed attempt
            status.load_retrying(spec.name, self.hostname, state.attempt_number, state.outcome.exception())

        cached = self.cache.peek(spec.name)
        hit = cached is not None and cached.spec == spec
        if hit:
            metrics.MODEL_CACHE_EVENTS.labels(self.hostname, "hit").inc()
        with tracing.span("blaze.model", engine=spec.name, cache_hit=hit):
            try:
                for attempt in Retrying(
                    retry=retry_if_not_exception_type((RuntimeLoadError, CacheRefusal)),
                    stop=stop_after_attempt(settings.BLAZE_LOAD_ATTEMPTS),
                    wait=wait_exponential_jitter(initial=1, max=30), before_sleep=before_sleep, reraise=True,
                ):
                    with attempt:
                        return self.cache.get(spec)
                raise AssertionError("unreachable: Retrying(reraise=True) returns or raises")
            except Exception as exc:
                status.load_failed(spec.name, self.hostname, str(exc))
                raise

    def load(self, spec_dict: EngineSpecDict) -> dict[str, Any]:
        return self.model(EngineSpec(**spec_dict)).describe()

    def infer(self, request_id: str, spec_dict: EngineSpecDict, payload: InferPayload) -> None:
        """Run one request through the model's batcher, streaming its events; idempotent by request id.
        A payload {"group": [request, ...]} is several clients' requests the web process gathered: they
        join the batcher as one arrival and are answered by one `done` event {"results": [...]}, where
        a request the engine refused holds {"error", "param"} in its place."""
        redis = shared_state.client()
        done_key = contract.request_done(request_id)
        if redis.exists(done_key):
            return  # a redelivered request another worker already answered
        # `in` narrows a union of TypedDicts only when they are final, hence the casts to GroupPayload.
        count = len(cast(GroupPayload, payload)["group"]) if "group" in payload else 1
        tracing.note(engine=spec_dict["name"], worker=self.hostname, request_id=request_id, requests=count)
        with self._lock:
            busy = self.tasks >= self.max_in_flight
            if not busy:
                self.tasks += 1
                self.in_flight += count
        if busy:
            metrics.REFUSED.labels(spec_dict["name"], "worker_busy").inc()
            tracing.note(refused="worker_busy")
            publish(request_id, contract.error_event(errors.WorkerBusy(
                f"Worker {self.hostname} already runs {self.max_in_flight} requests, its most at once "
                "(BLAZE_WORKER_MAX_IN_FLIGHT).", retry_after=1)))
            return  # not marked done: the web side may send it to another worker
        publish(request_id, {"type": contract.START, "worker": self.hostname})
        started = time.monotonic()
        try:
            spec = EngineSpec(**spec_dict)
            cold = self._cold_start(request_id, spec)
            entry = self.model(spec)
            if cold:
                waited = time.monotonic() - started
                metrics.COLD_STARTS.labels(spec.name).inc()
                metrics.COLD_START_SECONDS.labels(spec.name).inc(waited)
            submitted = time.time_ns()
            if "group" in payload:
                group = cast(GroupPayload, payload)["group"]
                results = [future.result() for future in self._submit(entry, group, None)]
                self._traced(group[0], submitted, results[0])
                publish(request_id, {"type": contract.DONE, "result": {"results": results}})
                for index, (request, result) in enumerate(zip(group, results)):
                    if "error" not in result:
                        self._observe(entry.spec, request, result, time.monotonic() - started)
                        self._record_usage(f"{request_id}:{index}", entry.spec, request, result)
                return
            # Token events only travel when the client streams: they cost a Redis write each.
            wants = (lambda event: True) if payload.get("stream") else (lambda event: event["type"] != contract.TOKEN)
            cancelled = threading.Event()
            # n choices are n rows, each seeded one on (the runtime stops every row once `cancelled` is set)
            one = cast(dict[str, Any], payload)  # an LLM's, embedder's or diffusion model's request, read by key
            rows = [{**one, "cancelled": cancelled.is_set,
                     "seed": one["seed"] + index if one.get("seed") is not None else None}
                    for index in range(one.get("choices") or 1)]

            def relay(index: int) -> OnEvent:
                def on_event(event: Event) -> None:
                    if not cancelled.is_set() and wants(event):
                        publish(request_id, cast(Event, {**event, "index": index}) if len(rows) > 1 else event)
                return on_event

            futures = self._submit(entry, rows, [relay(index) for index in range(len(rows))])
            results = []
            for future in futures:
                result = self._result_unless_cancelled(future, request_id, cancelled)
                if result is None:
                    log.info("request %s was given up by its client: stopped", request_id)
                    tracing.note(cancelled=True)
                    self._record_usage(request_id, entry.spec, one, _computed(futures), outcome="cancelled")
                    return
                if "error" in result:
                    raise errors.InvalidInput(result["error"], field=result.get("param"))
                results.append(result)
            result = results[0] if len(results) == 1 else {
                "choices": results, "prompt_tokens": results[0]["prompt_tokens"],
                "cached_tokens": results[0].get("cached_tokens", 0),  # the rows share one prompt
                "completion_tokens": sum(each["completion_tokens"] for each in results)}
            timings = {key: results[0][key] for key in ("queue_seconds", "batch_size") if key in results[0]}
            result = {**result, **timings,  # the rows were admitted together
                      "worker_seconds": sum(each.get("worker_seconds", 0.0) for each in results)}
            if cold:
                result["load_seconds"] = round(waited, 3)
            self._traced(payload, submitted, result)
            publish(request_id, {"type": contract.DONE, "result": result})
            self._observe(entry.spec, payload, result, time.monotonic() - started)
            self._record_usage(request_id, entry.spec, one, result)
            if one.get("adapter"):  # its first request loads an adapter onto the model: count its bytes
                self.cache.measure(entry.spec.name)
        except RuntimeLoadError as exc:
            self._failed(request_id, errors.Unavailable(f"Engine could not load: {exc}"))
        except errors.ApplicationError as exc:
            self._failed(request_id, exc)
        except Exception as exc:
            log.exception("request %s failed", request_id)
            self._failed(request_id, errors.TargetFailed(f"Inference failed: {exc}"))
        finally:
            with self._lock:
                self.tasks -= 1
                self.in_flight -= count
            redis.set(done_key, 1, ex=contract.STREAM_TTL_SECONDS)

    def _cold_start(self, request_id: str, spec: EngineSpec) -> bool:
        """Whether the request must wait for the model to load here; if so the client is told first,
        with the engine's last load time as the estimate."""
        cached = self.cache.peek(spec.name)
        if cached is not None and cached.spec == spec:
            return False
        try:
            estimate = (heartbeats.last_load(spec.name) or {}).get("seconds")
        except Exception:  # an estimate is a nicety: the load goes on without one
            log.exception("could not read %s's last load time", spec.name)
            estimate = None
        publish(request_id, {"type": contract.LOADING, "engine": spec.name, "worker": self.hostname,
                             "estimate_seconds": estimate})
        return True

    def _record_usage(self, event_id: str, spec: EngineSpec, request: Any, result: dict[str, Any],
                      outcome: str = "answered") -> None:
        """The request's usage event, when the web side asked for one (its payload's tags); Redis away
        loses the record, never the answer."""
        tags = request.get(usage_events.USAGE_FIELD)
        if not tags:
            return
        try:
            usage_events.record(event_id, tags, engine=spec.name, worker=self.hostname, outcome=outcome,
                                adapter=(request.get("adapter") or {}).get("name", ""),
                                **usage_events.counts(tags["kind"], request, result))
        except Exception as exc:  # noqa: BLE001 - Redis away: the answer went out all the same
            log.warning("could not record the usage of request %s: %s", event_id, exc)

    @staticmethod
    def _failed(request_id: str, exc: errors.ApplicationError) -> None:
        tracing.fail(exc.message)
        publish(request_id, contract.error_event(exc))

    @staticmethod
    def _traced(request: Any, submitted_ns: int, result: dict[str, Any]) -> None:
        """The request's wait in the batcher and its run there, as spans of the task's trace (the times
        its result carries: `batcher.timed`)."""
        if "queue_seconds" not in result:
            return
        admitted = submitted_ns + int(result["queue_seconds"] * 1e9)
        tracing.record("blaze.queue", submitted_ns, admitted, priority=request.get("priority"))
        tracing.record("blaze.run", admitted, batch_size=result.get("batch_size"),
                       prompt_tokens=result.get("prompt_tokens"), cached_tokens=result.get("cached_tokens"),
                       completion_tokens=result.get("completion_tokens"), finish_reason=result.get("finish_reason"),
                       embedding_cache_hits=result.get("cache_hits"))

    def _submit(self, entry: CacheEntry, requests: Sequence[Any],
                on_events: Sequence[OnEvent] | None) -> "list[Future[Any]]":
        """Futures for the requests, queued on the engine's batcher unless its waiting line is full
        (its `max_queue`): then QueueFull, at once. They join whole or not at all: each with its
        event callback (`on_events`), or, without, as one gathered group."""
        cap = entry.spec.config.get("max_queue", contract.MAX_QUEUE_DEFAULT)
        with self._lock:  # the check and the queueing together: concurrent requests cannot both take the last place
            if entry.batcher.pending + len(requests) > cap and entry.batcher.pending:
                metrics.REFUSED.labels(entry.spec.name, "queue_full").inc(len(requests))
                raise errors.QueueFull(
                    f"Engine {entry.spec.name} already has {entry.batcher.pending} requests waiting on worker "
                    f"{self.hostname} (its max_queue is {cap}).", retry_after=entry.batcher.retry_after())
            if on_events is not None:
                return [entry.batcher.submit(request, on_event=on_event)
                        for request, on_event in zip(requests, on_events, strict=True)]
            assert isinstance(entry.batcher, DynamicBatcher)  # a group is of embeddings, never an LLM's scheduler
            return entry.batcher.submit_group(requests)

    @staticmethod
    def _result_unless_cancelled(future: "Future[Any]", request_id: str,
                                 cancelled: threading.Event) -> dict[str, Any] | None:
        """The request's result, or None once the web side gave it up (its cancel key): then `cancelled`
        is set, the runtime stops decoding its row, and the request no longer counts in flight here."""
        key, redis = contract.request_cancelled(request_id), shared_state.client()
        while True:
            try:
                return future.result(timeout=contract.CANCEL_POLL_SECONDS)
            except TimeoutError:
                with tracing.quiet():  # a span per poll would bury the request's own
                    cancelled_now = redis.exists(key)
                if cancelled_now:
                    cancelled.set()
                    return None

    def _observe(self, spec: EngineSpec, payload: Any, result: dict[str, Any], seconds: float) -> None:
        log.info("request for %s answered in %.3f s", spec.name, seconds,
                 extra={"engine": spec.name, "seconds": round(seconds, 4)})
        tokens = result.get("completion_tokens")
        if tokens:
            metrics.TOKENS_GENERATED.labels(spec.name).inc(tokens)
            metrics.TOKENS_PER_SECOND.labels(spec.name).set(tokens / seconds if seconds > 0 else 0)
        cached = result.get("cached_tokens") or 0  # absent from other runtimes' results
        if cached > 0:
            metrics.PREFIX_CACHE_HITS.labels(spec.name).inc()
            metrics.PREFIX_CACHE_TOKENS_SAVED.labels(spec.name).inc(cached)
        if "cache_hits" in result:
            hits = result["cache_hits"]
            metrics.EMBEDDING_CACHE_EVENTS.labels(spec.name, "hit").inc(hits)
            metrics.EMBEDDING_CACHE_EVENTS.labels(spec.name, "miss").inc(len(result["embeddings"]) - hits)

