"""Engine runtimes: one module per kind, one small common shape.

A runtime is built from an `EngineSpec` and a device string, and offers:

    estimate_bytes() -> int          before loading: parameter count × dtype size (from the config files)
    load() -> None                   reads the weights onto the device; raises RuntimeLoadError with a clear message
    unload() -> None                 frees the weights (and the CUDA cache where there is one)
    loaded_bytes() -> int            after loading: bytes the weights really take
    run_batch(requests, emit) -> list[dict]
                                     one batched call for all requests (dicts already validated by the API);
                                     emit(index, event_dict) streams tokens / progress of request `index`;
                                     returns one result dict per request, in order. An exception for one
                                     request is returned in its place as {"error": "..."}; an exception that
                                     escapes fails the whole batch.
    batch_key(request) -> hashable   requests with equal keys may share a batch (diffusion: same shape)
    health() -> dict                 cheap facts for the health monitor

Runtimes know nothing of Celery, Redis or Django models: the worker hands them specs and requests.
"""

from dataclasses import dataclass, field


class RuntimeLoadError(Exception):
    """The model cannot be loaded; the message says why in words an operator can act on."""


class RequestError(Exception):
    """A request asks for something this engine cannot do (HTTP 400); `param` names the field."""

    def __init__(self, message, param=None):
        super().__init__(message)
        self.param = param


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


def runtime_for(spec, device):
    """The runtime instance for `spec` on `device` (imports the kind's module lazily: torch is slow)."""
    if spec.kind == "llm":
        from .llm import LlmRuntime as runtime_class
    elif spec.kind == "embedding":
        from .embedding import EmbeddingRuntime as runtime_class
    elif spec.kind == "diffusion":
        from .diffusion import DiffusionRuntime as runtime_class
    else:
        raise RuntimeLoadError(f"Unknown engine kind: {spec.kind}")
    return runtime_class(spec, device)
