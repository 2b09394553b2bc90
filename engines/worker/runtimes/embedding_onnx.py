"""A sentence-transformers model exported to ONNX and run with ONNX Runtime: an embedding engine's
`"backend": "onnx"` (EmbeddingRuntime picks it).

The export is done here, once per model, at load: `torch.onnx.export` of the model's own modules (the
transformer and its pooling, so the graph computes what sentence-transformers does) into a folder under
BLAZE_MODELS_DIR/onnx named by a digest of the model's files, so a changed model exports anew. Later loads
read that folder only: no torch weights, no sentence-transformers.
"""

import hashlib
import json
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings

from engines.worker.runtimes import RuntimeLoadError

EXPORT_FORMAT = 1  # part of the export folder's name: raise it when export() changes what it writes
EXAMPLE_TEXTS = ["an example to trace", "a second, longer example to trace the model with"]


def export_folder(model_dir: str | Path) -> Path:
    """Where the export of `model_dir` lives. Its name digests every file's path, size and mtime with the
    export format and the torch version, so editing or replacing the model (or torch) exports it again."""
    model_dir = Path(model_dir).resolve()
    stamp = [EXPORT_FORMAT, metadata.version("torch"), str(model_dir)]
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        stat = path.stat()
        stamp.append([str(path.relative_to(model_dir)), stat.st_size, stat.st_mtime_ns])
    digest = hashlib.sha256(json.dumps(stamp).encode()).hexdigest()[:16]
    return Path(settings.BLAZE_MODELS_DIR) / "onnx" / f"{model_dir.name}-{digest}"


def export(model_dir: str | Path, folder: Path) -> None:
    """Write `folder`: model.onnx (token ids in, one un-normalised sentence vector per text out), the tokenizer
    as sentence-transformers configured it, and export.json (the graph's inputs, the dimension, the longest
    input the model reads). Written beside and renamed into place, so a reader never sees half an export."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize

    # Any: its modules' attributes are untyped (torch's Module.__getattr__)
    model: Any = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    modules = list(model)
    if isinstance(modules[-1], Normalize):
        modules.pop()  # the runtime normalises after, as the engine's `normalize` says
    example = model.preprocess(EXAMPLE_TEXTS)
    names = [name for name, value in example.items() if isinstance(value, torch.Tensor)]

    class SentenceEmbedding(torch.nn.Module):
        """The model's modules on positional tensors, which is what an ONNX graph's inputs are."""

        def __init__(self) -> None:
            super().__init__()
            self.body = torch.nn.Sequential(*modules)

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            return self.body(dict(zip(names, tensors)))["sentence_embedding"]

    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        dims = {0: torch.export.Dim.DYNAMIC, 1: torch.export.Dim.DYNAMIC}
        torch.onnx.export(SentenceEmbedding().eval(), tuple(example[name] for name in names),
                          str(scratch / "model.onnx"), input_names=names, output_names=["sentence_embedding"],
                          dynamic_shapes=(tuple(dims for _ in names),), verbose=False)
        model.tokenizer.save_pretrained(str(scratch))
        (scratch / "export.json").write_text(json.dumps({
            "inputs": names, "dimension": model.get_embedding_dimension(),
            "max_position_embeddings": getattr(model[0].auto_model.config, "max_position_embeddings", None),
        }))
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    try:
        scratch.rename(folder)
    except OSError:
        shutil.rmtree(scratch, ignore_errors=True)
        if not (folder / "export.json").exists():
            raise  # not another worker's finished export of the same model: a real failure


class OnnxSentenceModel:
    """An exported model (see `export`) in an ONNX Runtime session with its tokenizer. Texts are cut at
    `max_seq_length` tokens and padded to the longest in the call, as sentence-transformers does."""

    def __init__(self, folder: Path, device: str, max_seq_length: int) -> None:
        import onnxruntime
        from transformers import AutoTokenizer

        self.folder = folder
        facts = json.loads((folder / "export.json").read_text())
        self.inputs = facts["inputs"]
        self.dimension = facts["dimension"]
        self.max_position_embeddings = facts["max_position_embeddings"]
        self.max_seq_length = max_seq_length
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.weight_files = sorted(folder.glob("model.onnx*"))
        options = onnxruntime.SessionOptions()
        # torch takes its thread count from OMP_NUM_THREADS (the deployment sets it); ONNX Runtime only from here
        options.intra_op_num_threads = int(os.environ.get("OMP_NUM_THREADS") or 0)
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda") and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")  # only the onnxruntime-gpu wheel has it
        self.session = onnxruntime.InferenceSession(str(folder / "model.onnx"), options, providers=providers)

    @classmethod
    def load(cls, model_dir: str | Path, device: str, max_seq_length: int) -> "OnnxSentenceModel":
        """The model in `model_dir`, exported first if this version of it never was."""
        try:
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            raise RuntimeLoadError(
                f"The onnx backend needs ONNX Runtime, which is not installed ({exc}): "
                "pip install -r requirements.txt, or set the engine's config.backend to torch."
            ) from exc
        folder = export_folder(model_dir)
        if not (folder / "export.json").exists():
            try:
                export(model_dir, folder)
            except Exception as exc:
                raise RuntimeLoadError(f"Could not export the embedding model in {model_dir} to ONNX: {exc}") from exc
        try:
            return cls(folder, device, max_seq_length)
        except Exception as exc:
            raise RuntimeLoadError(
                f"Could not open the ONNX export in {folder} ({exc}): delete the folder to export the model again."
            ) from exc

    def encode(self, texts: list[str], normalize: bool) -> np.ndarray:
        """One float32 vector per text, in one session run."""
        batch = self.tokenizer(texts, padding=True, truncation="longest_first", max_length=self.max_seq_length,
                               return_tensors="np")
        (vectors,) = self.session.run(None, {name: batch[name] for name in self.inputs})
        if normalize:
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors

    def token_counts(self, texts: list[str]) -> list[int]:
        """The tokens each text is read as (after the cut at max_seq_length)."""
        batch = self.tokenizer(texts, truncation="longest_first", max_length=self.max_seq_length)
        return [len(ids) for ids in batch["input_ids"]]

    def nbytes(self) -> int:
        """The exported weights' bytes (model.onnx and its external data file)."""
        return sum(path.stat().st_size for path in self.weight_files)

    def health(self) -> dict[str, Any]:
        return {"dimension": self.dimension, "onnx_providers": self.session.get_providers()}
