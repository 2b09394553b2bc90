"""The LoRA adapters a worker finds on its disk, checked against the base model they are to run on.

Reads files only (adapter_config.json, safetensors and GGUF headers), as the model catalog does: an
adapter is registered on an engine only once a worker has found it fits that engine's model.

- transformers: a PEFT LoRA directory (adapter_config.json, adapter_model.safetensors). It fits when
  every LoRA pair's shapes match the base weight it adapts (so the layers, and their sizes, are the
  base's), whatever path or hub id its config names as its base.
- llama.cpp: a GGUF file whose `general.type` is `adapter` (`adapter.type` lora), made for the base
  GGUF's architecture. Its pairs' shapes are checked by llama.cpp when it loads the adapter.
"""

import json
import math
from pathlib import Path
from typing import Literal, TypedDict

from safetensors import SafetensorError, safe_open

from engines.worker.catalog import CatalogError, _read_gguf_header, _read_json, _size_bytes, resolve

PEFT_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


class AdapterFacts(TypedDict):
    """What a worker reports about one adapter; None where the files do not say."""

    path: str
    runtime: Literal["transformers", "llama.cpp"]
    base_model: str | None  # the base the adapter names (PEFT's base_model_name_or_path; GGUF: its architecture)
    rank: int | None  # LoRA's r
    parameters: int | None
    size_bytes: int


def describe(path: str | Path, model: str, runtime: str) -> AdapterFacts:
    """Facts about the adapter at `path`, once checked to fit the base `model` (a path or a hub id on
    this worker) run by `runtime`. Raises CatalogError saying why not."""
    path = Path(path).expanduser().absolute()
    if not path.exists():
        raise CatalogError(f"No adapter at {path}: the path does not exist.")
    try:
        if runtime == "llama.cpp":
            return _describe_gguf(path, resolve(model))
        return _describe_peft(path, resolve(model))
    except (OSError, SafetensorError, UnicodeDecodeError, ValueError) as error:
        raise CatalogError(f"{path} cannot be read as an adapter: {error}.") from error


def _describe_peft(path: Path, base: Path) -> AdapterFacts:
    if path.is_file() or not (path / "adapter_config.json").is_file():
        raise CatalogError(f"{path} is not a PEFT adapter directory (no adapter_config.json): the transformers "
                           "runtime loads adapters saved by PEFT's save_pretrained.")
    config = _read_json(path / "adapter_config.json", {})
    if config.get("peft_type") != "LORA":
        raise CatalogError(f"{path} is a {config.get('peft_type') or 'untyped'} adapter; Blaze serves LoRA adapters.")
    weights = next((path / name for name in PEFT_WEIGHTS if (path / name).is_file()), None)
    if weights is None:
        raise CatalogError(f"{path} has no adapter weights ({' or '.join(PEFT_WEIGHTS)}).")
    shapes = _shapes(weights) if weights.suffix == ".safetensors" else None  # a pickle's: checked when loaded
    if shapes is not None:
        if not any(key.endswith(".lora_A.weight") for key in shapes):
            raise CatalogError(f"{path} holds no LoRA weights (no lora_A/lora_B pairs).")
        _check_fits(path, shapes, _base_shapes(base), base)
    return AdapterFacts(
        path=str(path), runtime="transformers", base_model=config.get("base_model_name_or_path"),
        rank=config.get("r") if isinstance(config.get("r"), int) else None,
        parameters=sum(math.prod(shape) for shape in shapes.values()) if shapes else None,
        size_bytes=_size_bytes(path))


def _shapes(weights: Path) -> dict[str, tuple[int, ...]]:
    with safe_open(str(weights), framework="numpy") as tensors:
        return {key: tuple(tensors.get_slice(key).get_shape()) for key in tensors.keys()}


def _base_shapes(base: Path) -> dict[str, tuple[int, ...]]:
    """The base model's weight shapes, by tensor name, from its safetensors headers."""
    if not base.is_dir():
        raise CatalogError(f"The engine's model at {base} is not a model directory.")
    files = sorted(base.glob("*.safetensors"))
    if not files:
        raise CatalogError(f"The engine's model at {base} has no safetensors weights to check the adapter against.")
    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        shapes.update(_shapes(file))
    return shapes


def _check_fits(path: Path, shapes: dict[str, tuple[int, ...]], base: dict[str, tuple[int, ...]],
                base_path: Path) -> None:
    """Every LoRA pair (A: [r, in], B: [out, r]) adapts a base weight of [out, in] (or [in, out], as
    GPT-2's Conv1D stores it). The adapter's module names carry PEFT's prefix, the base's may not."""
    for key, a_shape in shapes.items():
        if not key.endswith(".lora_A.weight"):
            continue
        module = key.removesuffix(".lora_A.weight").removeprefix("base_model.model.")
        b_shape = shapes.get(key.replace(".lora_A.", ".lora_B."))
        match = next((shape for name, shape in base.items()
                      if name == f"{module}.weight" or name.endswith(f".{module}.weight")
                      or f"{module}.weight".endswith(f".{name}")), None)
        if match is None:
            raise CatalogError(f"{path} adapts {module}, which the engine's model ({base_path.name}) does not have: "
                               f"it was trained on another architecture ({_base_named(path)}).")
        if b_shape is None or len(a_shape) != 2 or sorted((a_shape[1], b_shape[0])) != sorted(match):
            raise CatalogError(f"{path} adapts {module} as {a_shape[1:]} → {b_shape[:1] if b_shape else '?'}, but the "
                               f"engine's model has it as {match}: it was trained on another model "
                               f"({_base_named(path)}).")


def _base_named(path: Path) -> str:
    try:
        return json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path") or "unnamed"
    except (OSError, ValueError):
        return "unnamed"


def _describe_gguf(path: Path, base: Path) -> AdapterFacts:
    if path.suffix != ".gguf" or not path.is_file():
        raise CatalogError(f"{path} is not a GGUF file: the llama.cpp runtime loads a GGUF LoRA adapter.")
    metadata, parameters = _read_gguf_header(path)
    if metadata.get("general.type") != "adapter" or metadata.get("adapter.type") != "lora":
        raise CatalogError(f"{path} is a GGUF {metadata.get('general.type') or 'model'}, not a LoRA adapter "
                           "(general.type adapter, adapter.type lora).")
    architecture = metadata.get("general.architecture")
    base_architecture = _read_gguf_header(base)[0].get("general.architecture") if base.suffix == ".gguf" else None
    if architecture != base_architecture:
        raise CatalogError(f"{path} is a LoRA for {architecture} models; the engine's model is "
                           f"{base_architecture or 'not a GGUF model'}.")
    return AdapterFacts(path=str(path), runtime="llama.cpp", base_model=architecture, rank=None,
                        parameters=parameters, size_bytes=path.stat().st_size)
