"""The web↔worker contract: what a web process sends a Celery worker and what comes back.

Both sides import this module and nothing of each other (an import-linter contract checks it).

- Tasks go by name (`send_task`), so the web process never imports the worker's code; the names
  are the ones queued messages already carry. INFER_TASK and UNLOAD_EVERYWHERE_TASK return nothing:
  send them with `ignore_result=True`, or the sender subscribes to a result that never comes.
- Queues: the shared one, each worker's own (`worker_queue`), and the broadcast one (`CONTROL_QUEUE`).
- A request's events travel back on a Redis stream per request (`response_stream`), as orjson
  dicts under the field `event`: `start {worker}`, then `token {text}` / `progress {...}`, then one
  `done {result}` or `error {error, message, param}`, where `error` names a class of
  `blaze_site.errors` (`error_event` / `error_from`).
- A request given up before its final event has its cancel key set (`request_cancelled`): the worker
  stops decoding it within CANCEL_POLL_SECONDS and frees its slot.
- An LLM payload's `choices` (n) runs as that many rows seeded one on; their token events carry
  `index`, and the `done` result is `{"choices": [row, …], "prompt_tokens", "cached_tokens",
  "completion_tokens"}` (`cached_tokens`: prompt tokens the model's prefix cache supplied).
- A payload may carry `priority` (0-9, orders admission to an LLM's running batch) and `deadline`
  (epoch seconds: a request still waiting then is answered `timed_out` without running). A worker
  over BLAZE_WORKER_MAX_IN_FLIGHT answers `worker_busy`, an engine whose waiting line is at its
  `max_queue` answers `queue_full`; both carry `retry_after` seconds. A `done` result carries
  `queue_seconds`, the time the request waited in the worker for its slot.
- An embedding group: the payload `{"group": [request, ...]}` runs as one batcher arrival and is
  answered by one `done` event `{"results": [...]}`, a refused request holding `{"error", "param"}`.
- The batch window: both the worker's batcher and the web side's embedding grouping gather what
  arrives within `batch_wait_ms` of the last arrival, up to WINDOW_WAITS waits, up to
  `max_batch_size` rows.
"""

from dataclasses import dataclass, field

from blaze_site import errors, shared_state

INFER_TASK = "engines.infer"
CACHE_LOAD_TASK = "engines.cache_load"
CACHE_UNLOAD_TASK = "engines.cache_unload"
CACHE_EVICT_TASK = "engines.cache_evict"
UNLOAD_EVERYWHERE_TASK = "engines.unload_everywhere"

SHARED_QUEUE = "blaze"
CONTROL_QUEUE = "blaze.control"

START, TOKEN, PROGRESS, DONE, ERROR = "start", "token", "progress", "done", "error"
FINAL = (DONE, ERROR)

STREAM_TTL_SECONDS = 600
CANCEL_POLL_SECONDS = 0.2  # how often a worker looks for its running requests' cancel keys
WINDOW_WAITS = 10

# The batch window an engine of each kind gets when its config names none (the config serializers'
# defaults too).
BATCH_DEFAULTS = {
    "llm": {"max_batch_size": 8, "batch_wait_ms": 10},
    "embedding": {"max_batch_size": 32, "batch_wait_ms": 5},
    "diffusion": {"max_batch_size": 4, "batch_wait_ms": 10},
}
MAX_QUEUE_DEFAULT = 256  # requests that may wait for an engine's slot on one worker (its `max_queue`)
PREFIX_CACHE_MB = 256  # an LLM engine's prefix cache when its config names none (`prefix_cache_mb`)


def llm_runtime(model, config):
    """What runs an LLM engine: its config's `runtime`, else llama.cpp for a .gguf file, else transformers."""
    return config.get("runtime") or ("llama.cpp" if str(model).endswith(".gguf") else "transformers")


def worker_queue(hostname):
    """The queue only that worker consumes: the web process picks the worker that holds the model."""
    return f"blaze.worker.{hostname}"


def response_stream(request_id):
    return shared_state.key("response", request_id)


def request_done(request_id):
    """Set once a request is answered: a redelivered copy of it is dropped."""
    return shared_state.key("response", request_id, "done")


def request_cancelled(request_id):
    """Set by the web side when it gives a request up before its final event (the client stopped or went
    away, or the deadline passed): the worker stops decoding it and frees its slot."""
    return shared_state.key("response", request_id, "cancel")


def batch_window(kind, config):
    """(max rows, wait in seconds) of an engine's batch window."""
    defaults = BATCH_DEFAULTS.get(kind, BATCH_DEFAULTS["llm"])
    rows = config.get("max_batch_size", defaults["max_batch_size"])
    return rows, config.get("batch_wait_ms", defaults["batch_wait_ms"]) / 1000


@dataclass(frozen=True)
class EngineSpec:
    """What a worker needs to know to load an engine: a snapshot of the Engine row."""

    name: str
    kind: str
    model: str
    config: dict = field(default_factory=dict)

    @classmethod
    def from_engine(cls, engine):
        return cls(name=engine.name, kind=engine.kind, model=engine.model, config=dict(engine.config))

    def as_dict(self):
        return {"name": self.name, "kind": self.kind, "model": self.model, "config": self.config}


def error_event(exc):
    """The `error` event for an ApplicationError raised in the worker."""
    event = {"type": ERROR, "error": type(exc).kind, "message": str(exc), "param": exc.field}
    if isinstance(exc, errors.Overloaded):
        event["retry_after"] = exc.retry_after
    return event


def error_from(event):
    """The ApplicationError an `error` event stands for (an unknown kind: the target failed)."""
    kind = errors.KINDS.get(event["error"], errors.TargetFailed)
    if issubclass(kind, errors.Overloaded):
        return kind(event["message"], retry_after=event.get("retry_after") or 1)
    return kind(event["message"], field=event.get("param"))


class RuntimeLoadError(errors.Unavailable):
    """The model cannot be loaded; the message says why in words an operator can act on."""


class CacheRefusal(errors.OutOfMemory):
    """The model can never fit in this worker's cache budget."""
