"""Sentence embeddings with sentence-transformers (or its ONNX export: embedding_onnx.py), and an LRU of vectors
already computed."""

import hashlib
import math
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy

from engines.contract import EngineSpec
from engines.worker.runtimes import (
    EmbeddingRequest,
    Emit,
    RuntimeLoadError,
    parameter_count,
    release_memory,
    tensor_bytes,
)

if TYPE_CHECKING:
    from engines.worker.runtimes.embedding_onnx import OnnxSentenceModel


def cosine(u: Sequence[float] | numpy.ndarray, v: Sequence[float] | numpy.ndarray) -> float:
    """Cosine similarity of two vectors (0.0 where one of them is all zeros)."""
    dot = sum(a * b for a, b in zip(u, v))
    norms = math.sqrt(sum(a * a for a in u)) * math.sqrt(sum(b * b for b in v))
    return dot / norms if norms else 0.0


class VectorCache:
    """The `size` most recently used vectors by key; counts hits and misses.

    Ours because the only LRU in the standard library (functools.lru_cache) memoises one call at a time,
    and the runtime needs to look up a whole batch before one encode call for the misses.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.entries: OrderedDict[str, numpy.ndarray] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> numpy.ndarray | None:
        vector = self.entries.get(key)
        if vector is None:
            self.misses += 1
        else:
            self.hits += 1
            self.entries.move_to_end(key)
        return vector

    def put(self, key: str, vector: numpy.ndarray) -> None:
        self.entries[key] = vector
        self.entries.move_to_end(key)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)

    def clear(self) -> None:
        self.entries.clear()

    def stats(self) -> dict[str, float]:
        lookups = self.hits + self.misses
        return {
            "cache_entries": len(self.entries),
            "cache_hits": self.hits,
            "cache_misses": self.misses,
            "hit_rate": self.hits / lookups if lookups else 0.0,
        }


class TorchSentenceModel:
    """A sentence-transformers model run by torch, with OnnxSentenceModel's methods so the runtime does not ask
    which backend it has. Its own trailing Normalize module is dropped, as the ONNX export drops it: `encode`
    normalises when asked."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.dimension = model.get_embedding_dimension()
        self.max_position_embeddings = getattr(model[0].auto_model.config, "max_position_embeddings", None)

    @classmethod
    def load(cls, model_dir: str, device: str, max_seq_length: int) -> "TorchSentenceModel":
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.modules import Normalize

        try:
            model = SentenceTransformer(model_dir, device=device, local_files_only=True)
        except Exception as exc:
            raise RuntimeLoadError(f"Could not load the embedding model in {model_dir}: {exc}") from exc
        model.max_seq_length = max_seq_length
        if isinstance(model[-1], Normalize):
            del model[-1]
        return cls(model)

    def encode(self, texts: list[str], normalize: bool) -> numpy.ndarray:
        return self.model.encode(texts, batch_size=len(texts), normalize_embeddings=normalize, convert_to_numpy=True,
                                 show_progress_bar=False)

    def token_counts(self, texts: list[str]) -> list[int]:
        return self.model.preprocess(texts)["attention_mask"].sum(dim=1).tolist()

    def nbytes(self) -> int:
        return tensor_bytes(self.model)

    def health(self) -> dict[str, Any]:
        return {"dimension": self.dimension}


class EmbeddingRuntime:
    """A sentence-transformers model in a local directory. A request is {"input": [text, ...]}; its result
    {"embeddings": [float32 numpy vector, ...], "prompt_tokens": int, "cache_hits": int}. Texts seen before (same model)
    come from the cache; the rest of a batch, from all its requests, is encoded in one call: by torch
    (TorchSentenceModel), or with config backend "onnx" by ONNX Runtime on the model's export (OnnxSentenceModel)."""

    def __init__(self, spec: EngineSpec, device: str, cache_size: int = 10_000) -> None:
        self.spec = spec
        self.device = device
        self.backend = spec.config.get("backend", "torch")
        self.normalize = spec.config.get("normalize", True)
        self.max_seq_length = spec.config.get("max_seq_length", 256)
        self.cache = VectorCache(cache_size)
        self.model: TorchSentenceModel | OnnxSentenceModel | None = None

    def estimate_bytes(self) -> int:
        return parameter_count(self.spec.model) * 4  # fp32

    def load(self) -> None:
        if not Path(self.spec.model).is_dir():
            raise RuntimeLoadError(f"No model directory at {self.spec.model}.")
        model: "TorchSentenceModel | OnnxSentenceModel"
        if self.backend == "onnx":
            from engines.worker.runtimes.embedding_onnx import OnnxSentenceModel

            model = OnnxSentenceModel.load(self.spec.model, self.device, self.max_seq_length)
        else:
            model = TorchSentenceModel.load(self.spec.model, self.device, self.max_seq_length)
        limit = model.max_position_embeddings
        if limit and self.max_seq_length > limit:
            raise RuntimeLoadError(
                f"max_seq_length {self.max_seq_length} is more than this model reads ({limit} tokens): lower it."
            )
        self.model = model

    def unload(self) -> None:
        self.model = None
        self.cache.clear()
        release_memory(self.device)

    def loaded_bytes(self) -> int:
        return 0 if self.model is None else self.model.nbytes()

    def run_batch(self, requests: Sequence[EmbeddingRequest], emit: Emit) -> list[dict[str, Any]]:
        model = self.model
        assert model is not None  # the cache runs only what it loaded
        texts = [text for request in requests for text in request["input"]]
        keys = [self._cache_key(text) for text in texts]
        vectors: dict[str, numpy.ndarray] = {}
        missing: dict[str, str] = {}
        for key, text in zip(keys, texts):
            if key not in vectors and key not in missing:
                vector = self.cache.get(key)
                if vector is None:
                    missing[key] = text
                else:
                    vectors[key] = vector
        from_cache = [key in vectors for key in keys]
        if missing:
            for key, vector in zip(missing, model.encode(list(missing.values()), self.normalize)):
                vectors[key] = vector
                self.cache.put(key, vector)
        token_counts = model.token_counts(texts) if texts else []

        results, start = [], 0
        for request in requests:
            end = start + len(request["input"])
            results.append({
                "embeddings": [vectors[key] for key in keys[start:end]],
                "prompt_tokens": int(sum(token_counts[start:end])),
                "cache_hits": sum(from_cache[start:end]),
            })
            start = end
        return results

    def _cache_key(self, text: str) -> str:
        return hashlib.sha256(f"{self.spec.model}\0{text}".encode()).hexdigest()

    def batch_key(self, request: EmbeddingRequest) -> None:
        return None

    def batch_size(self, request: EmbeddingRequest) -> int:
        return len(request["input"])

    def stats(self) -> dict[str, float]:
        return self.cache.stats()

    def health(self) -> dict[str, Any]:
        facts: dict[str, Any] = {"device": self.device, "backend": self.backend, "dimension": None}
        if self.model is not None:
            facts.update(self.model.health())
        return {**facts, **self.stats()}
