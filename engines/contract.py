"""The web↔worker contract: what a web process sends a Celery worker and what comes back.

Both sides import this module and nothing of each other (an import-linter contract checks it).

- Tasks go by name (`send_task`), so the web process never imports the worker's code; the names
  are the ones queued messages already carry. INFER_TASK and UNLOAD_EVERYWHERE_TASK return nothing:
  send them with `ignore_result=True`, or the sender subscribes to a result that never comes.
- Queues: the shared one, each worker's own (`worker_queue`), and the broadcast one (`CONTROL_QUEUE`).
- A request's events travel back on a Redis stream per request (`response_stream`), as orjson
  dicts under the field `event`: `start {worker}`, then `loading {engine, worker, estimate_seconds}`
  when the worker must load the model first (a cold start), then `token {text}` / `progress {...}`,
  then one `done {result}` or `error {error, message, param}`, where `error` names a class of
  `core.errors` (`error_event` / `error_from`). A cold start's `done` result carries `load_seconds`,
  the time the request waited for the load.
- A request given up before its final event has its cancel key set (`request_cancelled`): the worker
  stops decoding it within CANCEL_POLL_SECONDS and frees its slot.
- An LLM payload's `choices` (n) runs as that many rows seeded one on; their token events carry
  `index`, and the `done` result is `{"choices": [row, …], "prompt_tokens", "cached_tokens",
  "completion_tokens"}` (`cached_tokens`: prompt tokens the model's prefix cache supplied).
- A payload may carry `priority` (0-9, orders admission to an LLM's running batch) and `deadline`
  (epoch seconds: a request still waiting then is answered `timed_out` without running). A worker
  over BLAZE_WORKER_MAX_IN_FLIGHT answers `worker_busy`, an engine whose waiting line is at its
  `max_queue` answers `queue_full`; both carry `retry_after` seconds. A `done` result carries
  `queue_seconds`, the time the request waited in the worker for its slot, `batch_size`, the rows
  running once it joined, and `worker_seconds`, its share of the batch's run (the scheduler or
  batcher puts them in the result: `batcher.timed`).
- A payload may carry `usage` (usage/events.py's tags: who asked, through what): the worker then
  records the request's usage event once it has run, cancelled ones included.
- An LLM payload may carry `adapter` (`AdapterRef`: the name and path of a LoRA adapter registered on
  the engine): its rows run under that adapter on the loaded base model (the worker loads it at the
  first row that asks for it), and its usage event names it. INSPECT_ADAPTER_TASK(path, model) answers
  what a worker finds at an adapter's path, checked against the base `model` (`{"error"}` when unfit).
- An embedding group: the payload `{"group": [request, ...]}` runs as one batcher arrival and is
  answered by one `done` event `{"results": [...]}`, a refused request holding `{"error", "param"}`.
- The payloads (`LlmPayload`, `EmbeddingPayload`, `DiffusionPayload`, `GroupPayload`) and the events
  (`Event`) are typed here as TypedDicts: on the wire they stay the plain dicts they describe.
- The batch window: both the worker's batcher and the web side's embedding grouping gather what
  arrives within `batch_wait_ms` of the last arrival, up to WINDOW_WAITS waits, up to
  `max_batch_size` rows.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, NotRequired, TypedDict

from core import errors, shared_state

if TYPE_CHECKING:
    from engines.models import Engine

INFER_TASK = "engines.infer"
CACHE_LOAD_TASK = "engines.cache_load"
CACHE_UNLOAD_TASK = "engines.cache_unload"
CACHE_EVICT_TASK = "engines.cache_evict"
UNLOAD_EVERYWHERE_TASK = "engines.unload_everywhere"
INSPECT_MODEL_TASK = "engines.inspect_model"
INSPECT_ADAPTER_TASK = "engines.inspect_adapter"
# Fetch a model from a Hugging Face hub onto the worker: its record and cancel flag are in Redis
# (engines/downloads.py); send it with `ignore_result=True`.
DOWNLOAD_MODEL_TASK = "engines.download_model"

SHARED_QUEUE = "blaze"
CONTROL_QUEUE = "blaze.control"

START: Final = "start"
LOADING: Final = "loading"
TOKEN: Final = "token"
PROGRESS: Final = "progress"
DONE: Final = "done"
ERROR: Final = "error"
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


class Payload(TypedDict, total=False):
    """What the web side adds to any payload it sends (a client never sets these)."""

    deadline: float  # epoch seconds: a request still waiting then is answered `timed_out`
    stream: bool  # token events wanted (else only `start` and the final event travel)
    usage: dict[str, Any]  # who asked, for the usage record the worker writes (usage/events.py:tags)


class Message(TypedDict):
    role: str  # system, user, assistant, tool or developer
    content: str
    name: NotRequired[str]
    tool_calls: NotRequired[list[dict[str, Any]]]  # an assistant's calls: {"id", "type", "function"}
    tool_call_id: NotRequired[str]  # a tool's answer: to which call


class Grammar(TypedDict, total=False):
    """What an LLM's output must follow: {"json_object": True}, or {"json_schema": schema, "strict"}."""

    json_object: bool
    json_schema: dict[str, Any]
    strict: bool


class AdapterRef(TypedDict):
    """A LoRA adapter a request runs under: its registered name and its path on the workers."""

    name: str
    path: str


class LlmPayload(Payload):
    """A chat or completion request (engines.openai.protocol): `prompt` or `messages`, the other None."""

    max_tokens: int
    temperature: float
    top_p: float
    stop: list[str]
    seed: int | None
    priority: int  # 0-9: orders admission to the running batch
    choices: int  # n: rows of one request, seeded one on
    # token id → bias; the web side's int keys arrive as strings (JSON)
    logit_bias: dict[int, float] | dict[str, float] | None
    frequency_penalty: float
    presence_penalty: float
    prompt: str | None
    messages: list[Message] | None
    tools: NotRequired[list[dict[str, Any]] | None]  # the functions the model is shown (chat only)
    grammar: Grammar | None
    logprobs: int | None  # None: no logprobs; else how many alternatives with each token
    adapter: NotRequired[AdapterRef | None]  # the LoRA adapter its rows run under (None: the base model)


class EmbeddingPayload(Payload):
    input: list[str]


class DiffusionPayload(Payload):
    """Text-to-image, or image-to-image when `image` (a base64 PNG/JPEG) and `strength` are set."""

    prompt: str
    negative_prompt: str | None
    steps: int
    width: int
    height: int
    guidance_scale: float
    seed: int
    n: int  # images to draw, from seed, seed + 1, …
    image: str | None
    strength: float | None


class GroupPayload(Payload):
    """Several clients' embedding requests the web side gathered into one task."""

    group: list[EmbeddingPayload]


InferPayload = LlmPayload | EmbeddingPayload | DiffusionPayload | GroupPayload


class StartEvent(TypedDict):
    type: Literal["start"]
    worker: str


class LoadingEvent(TypedDict):
    """The worker has the request but not the model: it loads it first (`estimate_seconds`: its last
    load's time, None before the first)."""

    type: Literal["loading"]
    engine: str
    worker: str
    estimate_seconds: float | None


def loading_text(event: LoadingEvent) -> str:
    """What a person is shown while the request waits for the load (the request log, the playground)."""
    estimate = event["estimate_seconds"]
    about = f"about {estimate:.0f} s" if estimate is not None and estimate >= 1 else (
        "about a second" if estimate is not None else "its first load, no estimate yet")
    return f"loading {event['engine']} on {event['worker']}, {about}"


class TokenEvent(TypedDict):
    type: Literal["token"]
    text: str
    index: NotRequired[int]  # which of the request's choices, when it asked for several


class ProgressEvent(TypedDict):
    type: Literal["progress"]
    step: int
    total: int


class DoneEvent(TypedDict):
    type: Literal["done"]
    result: dict[str, Any]  # the runtime's result, with `queue_seconds` and `batch_size` (see above)


class ErrorEvent(TypedDict):
    type: Literal["error"]
    error: str  # a core.errors class's `kind`
    message: str
    param: str | None
    retry_after: NotRequired[float]  # an Overloaded kind's: seconds before trying again
    code: NotRequired[str]


Event = StartEvent | LoadingEvent | TokenEvent | ProgressEvent | DoneEvent | ErrorEvent


def is_model_path(model: str) -> bool:
    """A local engine's model given as a path on the workers (else a Hugging Face hub id)."""
    return model.startswith(("/", "./", "~"))


def llm_runtime(model: str, config: Mapping[str, Any]) -> str:
    """What runs an LLM engine: its config's `runtime`, else llama.cpp for a .gguf file, else transformers."""
    return config.get("runtime") or ("llama.cpp" if str(model).endswith(".gguf") else "transformers")


def worker_queue(hostname: str) -> str:
    """The queue only that worker consumes: the web process picks the worker that holds the model."""
    return f"blaze.worker.{hostname}"


def response_stream(request_id: str) -> str:
    return shared_state.key("response", request_id)


def request_done(request_id: str) -> str:
    """Set once a request is answered: a redelivered copy of it is dropped."""
    return shared_state.key("response", request_id, "done")


def request_cancelled(request_id: str) -> str:
    """Set by the web side when it gives a request up before its final event (the client stopped or went
    away, or the deadline passed): the worker stops decoding it and frees its slot."""
    return shared_state.key("response", request_id, "cancel")


def batch_window(kind: str, config: Mapping[str, Any]) -> tuple[int, float]:
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
    config: dict[str, Any] = field(default_factory=dict)
    # Seconds without a request before a worker unloads the model (None: never). Not part of what is
    # loaded: a change applies to the loaded model, without a reload.
    keep_alive: float | None = field(default=None, compare=False)

    @classmethod
    def from_engine(cls, engine: "Engine") -> "EngineSpec":
        return cls(name=engine.name, kind=engine.kind, model=engine.model, config=dict(engine.config),
                   keep_alive=engine.keep_alive_seconds)

    def as_dict(self) -> "EngineSpecDict":
        return {"name": self.name, "kind": self.kind, "model": self.model, "config": self.config,
                "keep_alive": self.keep_alive}


class EngineSpecDict(TypedDict):
    """An EngineSpec as the infer and cache-load tasks carry it (`EngineSpec(**spec_dict)` on the worker)."""

    name: str
    kind: str
    model: str
    config: dict[str, Any]
    keep_alive: NotRequired[float | None]  # absent in messages queued before it existed


def error_event(exc: errors.ApplicationError) -> ErrorEvent:
    """The `error` event for an ApplicationError raised in the worker (or on the web side mid-stream)."""
    event: ErrorEvent = {"type": ERROR, "error": type(exc).kind, "message": str(exc), "param": exc.field}
    if isinstance(exc, errors.Overloaded):
        event["retry_after"] = exc.retry_after
    if exc.code:
        event["code"] = exc.code
    return event


def error_from(event: ErrorEvent) -> errors.ApplicationError:
    """The ApplicationError an `error` event stands for (an unknown kind: the target failed)."""
    kind = errors.KINDS.get(event["error"], errors.TargetFailed)
    if issubclass(kind, errors.Overloaded):
        return kind(event["message"], retry_after=event.get("retry_after") or 1)
    return kind(event["message"], field=event.get("param"), code=event.get("code"))


class RuntimeLoadError(errors.Unavailable):
    """The model cannot be loaded; the message says why in words an operator can act on."""


class CacheRefusal(errors.OutOfMemory):
    """The model can never fit in this worker's cache budget."""
