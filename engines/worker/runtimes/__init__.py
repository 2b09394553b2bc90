"""Engine runtimes: one module per kind, one small common shape.

A runtime is built from an `EngineSpec` and a device string, and offers:

    estimate_bytes() -> int          before loading: parameter count × dtype size (from the config files)
    load() -> None                   reads the weights onto the device; raises RuntimeLoadError with a clear message
    unload() -> None                 frees the weights (and the CUDA cache where there is one)
    loaded_bytes() -> int            after loading: bytes the weights really take
    run_batch(requests, emit) -> list[dict]
                                     one batched call for all requests (dicts already validated by the API:
                                     `LlmRequest`, `EmbeddingRequest`, `DiffusionRequest`);
                                     emit(index, event_dict) streams tokens / progress of request `index`;
                                     returns one result dict per request, in order. An exception for one
                                     request is returned in its place as {"error": "..."}; an exception that
                                     escapes fails the whole batch.
    batch_key(request) -> hashable   requests with equal keys may share a batch (diffusion: same shape)
    batch_size(request) -> int       optional: the rows the request adds to a batch, counted against
                                     max_batch_size (embedding: its texts; diffusion: its images; else 1)
    health() -> dict                 cheap facts for the health monitor
    adapter(request) -> str          LLMs: the LoRA adapter a request's rows run under, loaded at its first
                                     use (decoding.BASE_ADAPTER: none); `adapters`: those loaded,
                                     {name: (path, bytes)}, counted in loaded_bytes()

Runtimes know nothing of Celery, Redis or Django models: the worker hands them specs (`contract.EngineSpec`)
and requests. A request an engine cannot run raises `core.errors.InvalidInput` naming the field.
"""

import gc
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, TypedDict

from engines.contract import (
    DiffusionPayload,
    EmbeddingPayload,
    EngineSpec,
    Event,
    LlmPayload,
    RuntimeLoadError,
    llm_runtime,
)

if TYPE_CHECKING:
    from engines.worker.runtimes.diffusion import DiffusionRuntime
    from engines.worker.runtimes.embedding import EmbeddingRuntime
    from engines.worker.runtimes.llamacpp import LlamaCppRuntime
    from engines.worker.runtimes.llm import LlmRuntime

    Runtime: TypeAlias = LlmRuntime | LlamaCppRuntime | EmbeddingRuntime | DiffusionRuntime

Emit = Callable[[int, Event], None]  # run_batch's emit(index, event)


class WorkerNotes(TypedDict, total=False):
    """What the worker adds to a payload it runs (never sent)."""

    cancelled: Callable[[], bool]  # true once the request's client gave up


class LlmRequest(LlmPayload, WorkerNotes):
    """One row of an LLM payload (its `choices` run as that many rows, the seed moved on by each one)."""


class EmbeddingRequest(EmbeddingPayload, WorkerNotes):
    pass


class DiffusionRequest(DiffusionPayload, WorkerNotes):
    pass


def parameter_count(folder: str | Path) -> int:
    """Parameters stored under `folder`, read from the safetensors headers (a .bin file counts as fp32 by
    its size), loading nothing. Where a folder holds variants (`model.fp16.safetensors`) the plain file counts."""
    from safetensors import safe_open

    total = 0
    weight_folders = {path.parent for path in Path(folder).rglob("*") if path.suffix in (".safetensors", ".bin")}
    for weight_folder in weight_folders:
        files = sorted(weight_folder.glob("*.safetensors")) or sorted(weight_folder.glob("*.bin"))
        files = [path for path in files if "." not in path.stem] or files
        for path in files:
            if path.suffix == ".bin":
                total += path.stat().st_size // 4
                continue
            with safe_open(str(path), framework="numpy") as weights:
                total += sum(math.prod(weights.get_slice(key).get_shape()) for key in weights.keys())
    return total


def tensor_bytes(*modules: Any) -> int:
    """Bytes the parameters and buffers of these torch modules take."""
    tensors = [tensor for module in modules for tensor in (*module.parameters(), *module.buffers())]
    return sum(tensor.numel() * tensor.element_size() for tensor in tensors)


def release_memory(device: str) -> None:
    """Return freed memory after a model's last reference is dropped (and the CUDA cache on a GPU)."""
    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def runtime_for(spec: EngineSpec, device: str) -> "Runtime":
    """The runtime instance for `spec` on `device` (imports the kind's module lazily: torch is slow)."""
    if spec.kind == "llm" and llm_runtime(spec.model, spec.config) == "llama.cpp":
        from engines.worker.runtimes.llamacpp import LlamaCppRuntime

        return LlamaCppRuntime(spec, device)
    if spec.kind == "llm":
        from engines.worker.runtimes.llm import LlmRuntime

        return LlmRuntime(spec, device)
    if spec.kind == "embedding":
        from engines.worker.runtimes.embedding import EmbeddingRuntime

        return EmbeddingRuntime(spec, device)
    if spec.kind == "diffusion":
        from engines.worker.runtimes.diffusion import DiffusionRuntime

        return DiffusionRuntime(spec, device)
    raise RuntimeLoadError(f"Unknown engine kind: {spec.kind}")
