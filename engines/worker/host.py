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

import orjson
import psutil
from django.conf import settings
from tenacity import Retrying, retry_if_not_exception_type, stop_after_attempt, wait_exponential_jitter

from blaze_site import errors, shared_state, tracing
from engines import contract
from engines.contract import CacheRefusal, EngineSpec, RuntimeLoadError
from engines.worker import status
from engines.worker.cache import ModelCache
from monitoring import metrics

log = logging.getLogger(__name__)


def detect_device():
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


def gpu_utilization(device):
    """The GPU's busy percentage over the last sample period (NVML, through torch), or None: a CPU
    worker, or no NVML library on this machine."""
    if not device.startswith("cuda"):
        return None
    try:
        import torch

        return torch.cuda.utilization(int(device.split(":")[1]))
    except Exception:  # noqa: BLE001 - pynvml missing or the driver refuses: the dashboard shows "—"
        return None


def default_budget(device, total):
    """BLAZE_CACHE_BYTES, else 90% of a GPU's memory or half of the machine's RAM."""
    if settings.BLAZE_CACHE_BYTES:
        return settings.BLAZE_CACHE_BYTES
    return int(total * (0.9 if device.startswith("cuda") else 0.5))


def publish(request_id, event):
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


class EngineHost:
    """This process as an engine host: registers itself, beats, loads models and runs requests."""

    def __init__(self, hostname, threads=None):
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
        self._beat_thread = None

    def queue(self):
        return contract.worker_queue(self.hostname)

    def describe(self):
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

    def beat(self):
        for entry in self.cache.snapshot():
            metrics.QUEUE_DEPTH.labels(entry["engine"]).set(entry["batch_queue"])
        metrics.MODEL_CACHE_BYTES.labels(self.hostname).set(self.cache.used_bytes)
        redis = shared_state.client()
        pipe = redis.pipeline()
        pipe.set(shared_state.worker_key(self.hostname), json.dumps(self.describe()),
                 ex=int(settings.BLAZE_WORKER_LOST_SECONDS * 20))
        pipe.sadd(shared_state.workers_key(), self.hostname)
        pipe.execute()

    def start(self):
        def loop():
            while True:
                try:
                    self.beat()
                except Exception:  # a Redis blip must not end the heartbeat
                    log.exception("heartbeat failed")
                if self._stop.wait(settings.BLAZE_HEARTBEAT_SECONDS):
                    return

        self._beat_thread = threading.Thread(target=loop, name="heartbeat", daemon=True)
        self._beat_thread.start()

    def stop(self):
        self._stop.set()
        self.cache.clear()
        redis = shared_state.client()
        redis.delete(shared_state.worker_key(self.hostname))
        redis.srem(shared_state.workers_key(), self.hostname)

    def _cache_changed(self, event, details):
        counted = {"loaded": "miss", "evicted": "eviction", "unloaded": "unload"}.get(event)
        if counted:
            metrics.MODEL_CACHE_EVENTS.labels(self.hostname, counted).inc()
        if event in ("unloaded", "evicted"):
            metrics.QUEUE_DEPTH.labels(details["engine"]).set(0)
        status.cache_event(self.hostname, event, details)
        try:
            self.beat()
        except Exception:
            log.exception("heartbeat after cache change failed")

    def _batch_done(self, engine_name, size, seconds, error):
        entry = self.cache.peek(engine_name)
        metrics.INFERENCE_LATENCY.labels(engine_name, entry.spec.kind if entry else "").observe(seconds)
        status.batch_done(engine_name, size, seconds, error)

    @staticmethod
    def _admitted(engine_name, request, seconds, batch_size):
        if isinstance(request, dict):  # read back by `infer`: the worker's part of the queue time, and the trace
            request["queue_seconds"], request["batch_size"] = round(seconds, 4), batch_size
        metrics.QUEUE_WAIT.labels(engine_name, str(request.get("priority", "") if isinstance(request, dict) else ""))\
            .observe(seconds)

    @staticmethod
    def _stepped(engine_name, rows, seconds):
        metrics.BATCH_SIZE.labels(engine_name).observe(rows)

    def model(self, spec):
        """The engine's cache entry, loading it if need be. A load that fails for a reason that may
        pass (I/O, memory) is retried with backoff and the engine shows RECOVERING meanwhile; a
        configuration error (RuntimeLoadError) or a model too big for the cache fails at once."""
        def before_sleep(state):
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
            except Exception as exc:
                status.load_failed(spec.name, self.hostname, str(exc))
                raise

    def load(self, spec_dict):
        return self.model(EngineSpec(**spec_dict)).describe()

    def infer(self, request_id, spec_dict, payload):
        """Run one request through the model's batcher, streaming its events; idempotent by request id.
        A payload {"group": [request, ...]} is several clients' requests the web process gathered: they
        join the batcher as one arrival and are answered by one `done` event {"results": [...]}, where
        a request the engine refused holds {"error", "param"} in its place."""
        redis = shared_state.client()
        done_key = contract.request_done(request_id)
        if redis.exists(done_key):
            return  # a redelivered request another worker already answered
        count = len(payload["group"]) if "group" in payload else 1
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
            entry = self.model(EngineSpec(**spec_dict))
            submitted = time.time_ns()
            if "group" in payload:
                results = [future.result() for future in self._submit(entry, payload["group"], None)]
                self._traced(payload["group"][0], submitted, results[0])
                publish(request_id, {"type": contract.DONE, "result": {"results": results}})
                for request, result in zip(payload["group"], results):
                    if "error" not in result:
                        self._observe(entry.spec, request, result, time.monotonic() - started)
                return
            # Token events only travel when the client streams: they cost a Redis write each.
            wants = (lambda event: True) if payload.get("stream") else (lambda event: event["type"] != contract.TOKEN)
            cancelled = threading.Event()
            # n choices are n rows, each seeded one on (the runtime stops every row once `cancelled` is set)
            rows = [{**payload, "cancelled": cancelled.is_set,
                     "seed": payload["seed"] + index if payload.get("seed") is not None else None}
                    for index in range(payload.get("choices") or 1)]

            def relay(index):
                def on_event(event):
                    if not cancelled.is_set() and wants(event):
                        publish(request_id, {**event, "index": index} if len(rows) > 1 else event)
                return on_event

            futures = self._submit(entry, rows, [relay(index) for index in range(len(rows))])
            results = []
            for future in futures:
                result = self._result_unless_cancelled(future, request_id, cancelled)
                if result is None:
                    log.info("request %s was given up by its client: stopped", request_id)
                    tracing.note(cancelled=True)
                    return
                if "error" in result:
                    raise errors.InvalidInput(result["error"], field=result.get("param"))
                results.append(result)
            result = results[0] if len(results) == 1 else {
                "choices": results, "prompt_tokens": results[0]["prompt_tokens"],
                "cached_tokens": results[0].get("cached_tokens", 0),  # the rows share one prompt
                "completion_tokens": sum(each["completion_tokens"] for each in results)}
            self._traced(rows[0], submitted, result)
            if "queue_seconds" in rows[0]:
                result = {**result, "queue_seconds": rows[0]["queue_seconds"]}
            publish(request_id, {"type": contract.DONE, "result": result})
            self._observe(entry.spec, payload, result, time.monotonic() - started)
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

    @staticmethod
    def _failed(request_id, exc):
        tracing.fail(exc.message)
        publish(request_id, contract.error_event(exc))

    @staticmethod
    def _traced(request, submitted_ns, result):
        """The request's wait in the batcher and its run there, as spans of the task's trace (times the
        batcher noted in the request: `_admitted`)."""
        if "queue_seconds" not in request:
            return
        admitted = submitted_ns + int(request["queue_seconds"] * 1e9)
        tracing.record("blaze.queue", submitted_ns, admitted, priority=request.get("priority"))
        tracing.record("blaze.run", admitted, batch_size=request.get("batch_size"),
                       prompt_tokens=result.get("prompt_tokens"), cached_tokens=result.get("cached_tokens"),
                       completion_tokens=result.get("completion_tokens"), finish_reason=result.get("finish_reason"),
                       embedding_cache_hits=result.get("cache_hits"))

    def _submit(self, entry, requests, on_events):
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
            return entry.batcher.submit_group(requests)

    @staticmethod
    def _result_unless_cancelled(future, request_id, cancelled):
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

    def _observe(self, spec, payload, result, seconds):
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

