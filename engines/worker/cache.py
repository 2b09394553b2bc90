"""The per-worker model cache: loaded runtimes, least recently used first out, under a byte budget.

Each loaded model gets its batcher, so concurrent requests for it share batched calls: a decoder-only
LLM its ContinuousScheduler (rows join and leave between decode steps), any other model its
DynamicBatcher (one call per batch).
"""

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.template.defaultfilters import filesizeformat

from engines import contract
from engines.contract import CacheRefusal, EngineSpec
from engines.worker.batcher import DynamicBatcher
from engines.worker.runtimes import runtime_for
from engines.worker.scheduler import ContinuousScheduler

if TYPE_CHECKING:
    from engines.worker.runtimes import Runtime

OnChange = Callable[[str, dict[str, Any]], None]  # (event, details)
OnBatch = Callable[[str, int, float, BaseException | None], None]  # (engine, requests, seconds, error)
OnAdmit = Callable[[str, Any, float, int], None]  # (engine, request, seconds it waited, batch size)
OnStep = Callable[[str, int, float], None]  # (engine, rows, seconds)


@dataclass
class CacheEntry:
    spec: EngineSpec
    runtime: "Runtime"
    batcher: DynamicBatcher | ContinuousScheduler
    estimated_bytes: int
    bytes: int
    loaded_at: float = field(default_factory=time.time)
    load_seconds: float = 0.0  # how long the load took (the next cold start's estimate)
    last_used: float = field(default_factory=time.time)
    hits: int = 0

    def describe(self) -> dict[str, Any]:
        return {
            "engine": self.spec.name, "kind": self.spec.kind, "model": self.spec.model,
            "bytes": self.bytes, "estimated_bytes": self.estimated_bytes,
            "loaded_at": self.loaded_at, "load_seconds": round(self.load_seconds, 3),
            "last_used": self.last_used, "hits": self.hits,
            "batch_queue": self.batcher.pending, "running": getattr(self.batcher, "running", None),
            "scheduler": "continuous" if isinstance(self.batcher, ContinuousScheduler) else "dynamic",
            # An LLM's {"entries", "bytes", "budget_bytes", "hits", "misses", "saved_tokens"}; None without one.
            "prefix_cache": stats() if (stats := getattr(self.runtime, "prefix_cache_stats", None)) else None,
            # An LLM's loaded LoRA adapters, {name: bytes} (counted in `bytes` too); copied at once, as the
            # model's own thread may be loading one.
            "adapters": {name: size for name, (_, size) in dict(getattr(self.runtime, "adapters", {})).items()},
        }


class ModelCache:
    """Loaded models by engine name, in least-recently-used order, never over `budget_bytes`.

    `get(spec)` returns the entry, loading it first if need be (evicting least-recently-used models
    until the estimate fits); a model whose estimate exceeds the whole budget is refused. Loading
    the same engine from many threads loads it once.
    """

    def __init__(self, *, budget_bytes: int, device: str,
                 runtime_factory: Callable[[EngineSpec, str], "Runtime"] = runtime_for,
                 on_change: OnChange | None = None, on_batch: OnBatch | None = None, on_admit: OnAdmit | None = None,
                 on_step: OnStep | None = None) -> None:
        self.budget_bytes = budget_bytes
        self.device = device
        self.runtime_factory = runtime_factory
        self.on_change: OnChange = on_change or (lambda event, entry: None)
        self.on_batch = on_batch  # as requests finish
        self.on_admit = on_admit  # as a request starts running
        self.on_step = on_step  # per batched call: a batch, or one decode step
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self._lock = threading.RLock()
        # One load at a time, from its first import on: transformers' from_pretrained is not safe in two
        # threads at once (two loads met as "Cannot copy out of meta tensor"), nor is a first import of
        # transformers and diffusers (both import accelerate: "partially initialized module"), and a
        # device loads one model at a time anyway.
        self._loading_one = threading.Lock()
        self._loading: dict[str, threading.Event] = {}

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return sum(entry.bytes for entry in self._entries.values())

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return [entry.describe() for entry in reversed(self._entries.values())]

    def peek(self, name: str) -> CacheEntry | None:
        with self._lock:
            return self._entries.get(name)

    def get(self, spec: EngineSpec) -> CacheEntry:
        while True:
            with self._lock:
                entry = self._entries.get(spec.name)
                if entry is not None and entry.spec == spec:
                    self._entries.move_to_end(spec.name)
                    entry.spec = spec  # its keep_alive may have changed (not a reason to reload)
                    entry.hits += 1
                    entry.last_used = time.time()
                    return entry
                loading = self._loading.get(spec.name)
                if loading is None:
                    loading = self._loading[spec.name] = threading.Event()
                    break
            loading.wait()
        try:
            if entry is not None:  # the engine's settings changed: reload with the new ones
                self.unload(spec.name)
            return self._load(spec)
        finally:
            with self._lock:
                self._loading.pop(spec.name).set()

    def _load(self, spec: EngineSpec) -> CacheEntry:
        with self._loading_one:
            runtime = self.runtime_factory(spec, self.device)
            estimate = runtime.estimate_bytes()
            if estimate > self.budget_bytes:
                raise CacheRefusal(
                    f"Engine {spec.name} needs about {filesizeformat(estimate)} but this worker's model cache holds "
                    f"{filesizeformat(self.budget_bytes)} (BLAZE_CACHE_BYTES); it can never be loaded here."
                )
            self._make_room(estimate, keep=None)
            self.on_change("loading", {"engine": spec.name, "estimated_bytes": estimate})
            started = time.monotonic()
            runtime.load()
            seconds = time.monotonic() - started
        batcher = self._batcher(spec, runtime)
        entry = CacheEntry(spec=spec, runtime=runtime, batcher=batcher, estimated_bytes=estimate,
                           bytes=runtime.loaded_bytes() or estimate, load_seconds=seconds)
        with self._lock:
            self._entries[spec.name] = entry
        self._make_room(0, keep=spec.name)  # the measured size may exceed the estimate
        self.on_change("loaded", entry.describe())
        return entry

    def _batcher(self, spec: EngineSpec, runtime: "Runtime") -> DynamicBatcher | ContinuousScheduler:
        rows, wait = contract.batch_window(spec.kind, spec.config)

        def bound(callback: Callable[..., None] | None) -> Callable[..., None] | None:
            return (lambda *args: callback(spec.name, *args)) if callback else None

        decoder = runtime.decoder() if hasattr(runtime, "decoder") else None
        if decoder is not None:
            return ContinuousScheduler(decoder, max_batch_size=rows, max_wait_ms=wait * 1000,
                                       name=f"scheduler-{spec.name}", on_admit=bound(self.on_admit),
                                       on_step=bound(self.on_step), on_done=bound(self.on_batch))
        assert hasattr(runtime, "run_batch")  # every runtime without a decoder runs whole batches
        return DynamicBatcher(
            runtime.run_batch, max_batch_size=rows, max_wait_ms=wait * 1000,
            batch_key=getattr(runtime, "batch_key", None), batch_size=getattr(runtime, "batch_size", None),
            name=f"batcher-{spec.name}", on_admit=bound(self.on_admit), on_batch=bound(self.on_batch),
            on_step=bound(self.on_step),
        )

    def _make_room(self, needed: int, keep: str | None) -> None:
        while True:
            with self._lock:
                if self.used_bytes + needed <= self.budget_bytes:
                    return
                victim = next((name for name in self._entries if name != keep), None)
            if victim is None:
                return
            self.unload(victim, reason="evicted")

    def measure(self, name: str) -> None:
        """Measure a loaded model again (a LoRA adapter loaded onto it grows it): the new size counts in
        the budget, and least recently used other models go if it no longer fits."""
        with self._lock:
            entry = self._entries.get(name)
            if entry is None or (size := entry.runtime.loaded_bytes()) == entry.bytes:
                return
            entry.bytes = size
        self._make_room(0, keep=name)
        self.on_change("resized", entry.describe())

    def touch(self, name: str) -> None:
        """The engine has just answered: its idle time starts now."""
        with self._lock:
            entry = self._entries.get(name)
            if entry is not None:
                entry.last_used = time.time()

    def unload_idle(self, now: float | None = None) -> list[str]:
        """Unload each model idle longer than its engine's keep_alive (nothing queued or running, no
        request since); returns their names. Chosen and removed under the lock `get` takes, so a
        request that has just been handed a model keeps it."""
        now = time.time() if now is None else now
        with self._lock:
            idle = [name for name, entry in self._entries.items()
                    if entry.spec.keep_alive is not None and now - entry.last_used > entry.spec.keep_alive
                    and not entry.batcher.pending and not getattr(entry.batcher, "running", 0)]
            entries = [self._entries.pop(name) for name in idle]
        for entry in entries:
            self._drop(entry, "idle")
        return idle

    def unload(self, name: str, reason: str = "unloaded") -> bool:
        """Drop an engine's model; returns False when it was not loaded."""
        with self._lock:
            entry = self._entries.pop(name, None)
        if entry is None:
            return False
        self._drop(entry, reason)
        return True

    def _drop(self, entry: CacheEntry, reason: str) -> None:
        entry.batcher.close()
        entry.runtime.unload()
        self.on_change(reason, entry.describe())

    def clear(self) -> None:
        for name in list(self._entries):
            self.unload(name)
