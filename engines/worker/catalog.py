"""The models a worker can serve, found on its disk: what each is, what runs it, and what loading it takes.

Reads config files (config.json, model_index.json, modules.json, sentence_bert_config.json,
tokenizer_config.json), safetensors headers and GGUF headers only: it never loads weights, so a scan of a
directory of large models takes milliseconds. Two places are looked at: a models directory (one model per
subdirectory or .gguf file) and a Hugging Face hub cache (models--org--name/snapshots/<revision>/).
"""

import json
import math
import struct
from collections import Counter
from pathlib import Path
from typing import Any, BinaryIO, Literal, TypedDict

from safetensors import SafetensorError, safe_open

from engines.contract import is_model_path
from engines.worker.runtimes import parameter_count

Kind = Literal["llm", "embedding", "diffusion"]
Runtime = Literal["diffusers", "sentence-transformers", "transformers", "llama.cpp"]
Source = Literal["path", "models_dir", "hf_cache"]

_RUNTIMES: dict[Kind, Runtime] = {"diffusion": "diffusers", "embedding": "sentence-transformers", "llm": "transformers"}
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions")
_CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")


class ModelFacts(TypedDict):
    """What a worker reports about one model it can serve; None where the files do not say."""

    path: str  # absolute; for a hub cache entry the snapshot directory
    name: str  # directory or file name; for a hub cache entry the repo id "org/name"
    source: Source
    kind: Kind
    runtime: Runtime
    architecture: str | None  # "GPT2LMHeadModel", "BertModel", "StableDiffusionPipeline", GGUF's "llama"
    parameters: int | None
    dtype: str | None  # config's torch_dtype, else the safetensors dtype most weights have; GGUF: its file type
    size_bytes: int  # the files on disk, through symlinks
    memory_bytes: int | None  # loading at the default config: parameters × 4 (fp32); a GGUF file: its size
    context_length: int | None  # None for a diffusion pipeline
    chat_template: bool


class CatalogError(Exception):
    """A path that is not a model Blaze can serve; str() says why, in one sentence."""


def describe(path: str | Path) -> ModelFacts:
    """Facts about one model at `path` (a directory, or a .gguf file). Raises CatalogError."""
    try:
        path = Path(path).expanduser().absolute()
        exists = path.exists()
    except (ValueError, RuntimeError) as error:  # a NUL in the name; "~nobody" with no such user
        raise CatalogError(f"{path} is not a path this worker can read: {error}.") from error
    if not exists:
        raise CatalogError(f"No model at {path}: the path does not exist.")
    try:
        if path.is_file():
            if path.suffix != ".gguf":
                raise CatalogError(f"{path} is a file but not a .gguf model: give a model directory or a GGUF file.")
            return _describe_gguf(path)
        return _describe_dir(path)
    except (OSError, SafetensorError, UnicodeDecodeError, struct.error) as error:
        raise CatalogError(f"{path} cannot be read as a model: {error}.") from error


def hf_cache() -> Path:
    """This worker's Hugging Face hub cache (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def resolve(model: str) -> Path:
    """Where `model` is on this worker: a path as given, a hub id ("org/name") as its cached snapshot.
    Raises CatalogError for a hub id not in the cache."""
    if is_model_path(model):
        return Path(model)  # describe() expands ~ (and says so when it cannot)
    for repo_id, snapshot in _hf_cache_snapshots(hf_cache()):
        if repo_id == model:
            return snapshot
    raise CatalogError(f"{model} is not in this worker's Hugging Face cache ({hf_cache()}).")


def scan(models_dir: Path | None, hf_cache: Path | None) -> list[ModelFacts]:
    """describe() of every model directly under models_dir (each subdirectory, and each .gguf file, also .gguf
    files one level down) and of every model in a Hugging Face hub cache layout under hf_cache
    (models--org--name/snapshots/<revision>/, the newest snapshot per repo, i.e. the one refs/main points to
    when present). Entries that are not models are skipped silently; a missing dir gives []. Sorted by name."""
    found: list[ModelFacts] = []
    for candidate in _models_dir_candidates(models_dir):
        facts = _try_describe(candidate)
        if facts is not None:
            facts["source"] = "models_dir"
            found.append(facts)
    for repo_id, snapshot in _hf_cache_snapshots(hf_cache):
        facts = _try_describe(snapshot)
        if facts is not None:
            facts["name"], facts["source"] = repo_id, "hf_cache"
            found.append(facts)
    return sorted(found, key=lambda facts: (facts["name"], facts["path"]))


def _try_describe(path: Path) -> ModelFacts | None:
    try:
        return describe(path)
    except CatalogError:
        return None


def _models_dir_candidates(models_dir: Path | None) -> list[Path]:
    if models_dir is None or not Path(models_dir).is_dir():
        return []
    candidates = []
    for entry in _visible(Path(models_dir)):
        if entry.is_dir():
            candidates.append(entry)
            candidates.extend(child for child in _visible(entry) if child.suffix == ".gguf" and child.is_file())
        elif entry.suffix == ".gguf":
            candidates.append(entry)
    return candidates


def _visible(folder: Path) -> list[Path]:
    return sorted(entry for entry in folder.iterdir() if not entry.name.startswith("."))


def _hf_cache_snapshots(hf_cache: Path | None) -> list[tuple[str, Path]]:
    """(repo id, snapshot directory) for each model repo in the cache: the snapshot refs/main names, else the
    newest one."""
    if hf_cache is None or not Path(hf_cache).is_dir():
        return []
    snapshots = []
    for repo in sorted(Path(hf_cache).glob("models--*")):
        revisions = [entry for entry in (repo / "snapshots").glob("*") if entry.is_dir()]
        if not revisions:
            continue
        main = repo / "refs" / "main"
        pinned = repo / "snapshots" / main.read_text().strip() if main.is_file() else None
        snapshot = pinned if pinned is not None and pinned.is_dir() else max(revisions, key=lambda p: p.stat().st_mtime)
        snapshots.append((repo.name.removeprefix("models--").replace("--", "/"), snapshot))
    return snapshots


def _describe_dir(path: Path) -> ModelFacts:
    config = _read_json(_transformer_folder(path) / "config.json", {})
    kind, architecture = _dir_kind(path, config)
    parameters = parameter_count(path) or None
    return ModelFacts(
        path=str(path), name=path.name, source="path", kind=kind, runtime=_RUNTIMES[kind],
        architecture=architecture, parameters=parameters,
        dtype=_config_dtype(config) or _safetensors_dtype(path),
        size_bytes=_size_bytes(path),
        memory_bytes=parameters * 4 if parameters is not None else None,
        context_length=None if kind == "diffusion" else _context_length(path, kind, config),
        chat_template=_has_chat_template(path),
    )


def _dir_kind(path: Path, config: dict[str, Any]) -> tuple[Kind, str | None]:
    """The kind of model in directory `path` and its architecture: a diffusers pipeline has a model_index.json,
    a sentence-transformers model a modules.json, a causal LM a config.json that says so."""
    if (path / "model_index.json").is_file():
        return "diffusion", _read_json(path / "model_index.json", {}).get("_class_name")
    if (path / "modules.json").is_file() or (path / "config_sentence_transformers.json").is_file():
        return "embedding", _first_architecture(config)
    if not config:
        raise CatalogError(f"{path} is not a model Blaze can serve: it has no config.json, modules.json "
                           "or model_index.json.")
    architectures = [name for name in config.get("architectures") or [] if isinstance(name, str)]
    causal = next((name for name in architectures if name.endswith(("ForCausalLM", "LMHeadModel"))), None)
    if causal is not None:
        return "llm", causal
    by_model_type = None if architectures else _causal_lm_class(config.get("model_type"))
    if by_model_type is not None:
        return "llm", by_model_type
    described = architectures[0] if architectures else config.get("model_type") or "unnamed"
    raise CatalogError(f"{path} holds a {described} model, which is neither a causal LM, a sentence-transformers "
                       "model nor a diffusers pipeline.")


def _causal_lm_class(model_type: object) -> str | None:
    """transformers' causal-LM class for `model_type`, or None. Asked only of a config that names no
    architectures (a model type such as bert has a causal-LM head too): importing transformers takes seconds."""
    if not isinstance(model_type, str):
        return None
    try:
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    except ImportError:
        return None
    name = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type)
    return name if isinstance(name, str) else None


def _transformer_folder(path: Path) -> Path:
    """Where a sentence-transformers model keeps its transformer (older models: a subfolder named in
    modules.json)."""
    for module in _read_json(path / "modules.json", []):
        if isinstance(module, dict) and str(module.get("type", "")).endswith(".Transformer"):
            return path / str(module.get("path") or "")
    return path


def _first_architecture(config: dict[str, Any]) -> str | None:
    architectures = config.get("architectures") or []
    return architectures[0] if architectures and isinstance(architectures[0], str) else None


def _config_dtype(config: dict[str, Any]) -> str | None:
    dtype = config.get("torch_dtype") or config.get("dtype")
    return dtype if isinstance(dtype, str) else None


def _safetensors_dtype(path: Path) -> str | None:
    """The dtype most weights under `path` are stored in (counted in elements), from the safetensors headers."""
    files = sorted(path.rglob("*.safetensors"))
    elements: Counter[str] = Counter()
    for file in [file for file in files if "." not in file.stem] or files:  # variants (model.fp16) aside
        with safe_open(str(file), framework="numpy") as weights:
            for key in weights.keys():
                tensor = weights.get_slice(key)
                elements[tensor.get_dtype()] += math.prod(tensor.get_shape())
    return elements.most_common(1)[0][0] if elements else None


def _context_length(path: Path, kind: Kind, config: dict[str, Any]) -> int | None:
    if kind == "embedding":  # what sentence-transformers truncates to, not what the positions allow
        seq_length = _read_json(path / "sentence_bert_config.json", {}).get("max_seq_length")
        if isinstance(seq_length, int):
            return seq_length
    for scope in (config, config.get("text_config") or {}):
        for key in _CONTEXT_KEYS:
            if isinstance(scope.get(key), int):
                return int(scope[key])
    return None


def _has_chat_template(path: Path) -> bool:
    if any((path / name).is_file() for name in _CHAT_TEMPLATE_FILES):
        return True
    return bool(_read_json(path / "tokenizer_config.json", {}).get("chat_template"))


def _size_bytes(path: Path) -> int:
    """Bytes of the files under `path`; stat() follows the hub cache's symlinks to its blobs. Hidden folders
    (a clone's .git) are not the model."""
    files = [file for file in path.rglob("*") if not any(part.startswith(".") for part in file.relative_to(path).parts)]
    return sum(file.stat().st_size for file in files if file.is_file())


def _read_json(path: Path, default: Any) -> Any:
    """The JSON in `path`, of the same type as `default` ({} or []); `default` when the file is absent."""
    if not path.is_file():
        return default
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise CatalogError(f"{path} is not valid JSON ({error}).") from error
    if not isinstance(value, type(default)):
        raise CatalogError(f"{path} holds a JSON {type(value).__name__}, not the {type(default).__name__} expected.")
    return value


# Read by hand rather than with gguf.GGUFReader: the reader decodes every array (the vocabulary, the merges)
# into numpy, about 4 s for a 135M model; skipping them takes milliseconds.

_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def _describe_gguf(path: Path) -> ModelFacts:
    metadata, parameters = _read_gguf_header(path)
    architecture = metadata.get("general.architecture")
    context_length = metadata.get(f"{architecture}.context_length")
    size = path.stat().st_size
    return ModelFacts(
        path=str(path), name=path.name, source="path", kind="llm", runtime="llama.cpp",
        architecture=architecture if isinstance(architecture, str) else None, parameters=parameters,
        dtype=_gguf_file_type(metadata.get("general.file_type")), size_bytes=size, memory_bytes=size,
        context_length=context_length if isinstance(context_length, int) else None,
        chat_template=bool(metadata.get("tokenizer.chat_template")),
    )


def _read_gguf_header(path: Path) -> tuple[dict[str, Any], int]:
    """(the scalar and string metadata, the parameters counted over the tensor infos) of a GGUF v2/v3 file.
    Arrays are skipped."""
    with path.open("rb") as file:
        if file.read(4) != b"GGUF":
            raise CatalogError(f"{path} is not a GGUF file: it does not start with the GGUF magic.")
        version, tensor_count, kv_count = struct.unpack("<IQQ", _read_exactly(file, 20))
        if version not in (2, 3):
            raise CatalogError(f"{path} is a GGUF version {version} file; Blaze reads versions 2 and 3.")
        metadata = {}
        for _ in range(kv_count):
            key = _gguf_string(file)
            (value_type,) = struct.unpack("<I", _read_exactly(file, 4))
            metadata[key] = _gguf_value(file, value_type, path)
        parameters = 0
        for _ in range(tensor_count):
            _gguf_string(file)
            (dimensions,) = struct.unpack("<I", _read_exactly(file, 4))
            parameters += math.prod(struct.unpack(f"<{dimensions}Q", _read_exactly(file, 8 * dimensions)))
            _read_exactly(file, 12)  # the tensor's type (u32) and offset (u64)
    return metadata, parameters


def _gguf_value(file: BinaryIO, value_type: int, path: Path) -> Any:
    if value_type in _GGUF_SCALARS:
        fmt = _GGUF_SCALARS[value_type]
        return struct.unpack(fmt, _read_exactly(file, struct.calcsize(fmt)))[0]
    if value_type == _GGUF_STRING:
        return _gguf_string(file)
    if value_type == _GGUF_ARRAY:
        item_type, count = struct.unpack("<IQ", _read_exactly(file, 12))
        if item_type in _GGUF_SCALARS:
            file.seek(count * struct.calcsize(_GGUF_SCALARS[item_type]), 1)
        else:
            for _ in range(count):
                _gguf_value(file, item_type, path)
        return None
    raise CatalogError(f"{path} has a GGUF metadata value of unknown type {value_type}: the file may be damaged.")


def _gguf_string(file: BinaryIO) -> str:
    (length,) = struct.unpack("<Q", _read_exactly(file, 8))
    return _read_exactly(file, length).decode("utf-8")


def _read_exactly(file: BinaryIO, count: int) -> bytes:
    data = file.read(count)
    if len(data) != count:
        raise CatalogError(f"{file.name} ends inside its GGUF header: the file is truncated.")
    return data


def _gguf_file_type(value: object) -> str | None:
    """GGUF's `general.file_type` as a name ("Q4_1", "F16"), or None when absent or unknown."""
    from gguf import LlamaFileType

    if not isinstance(value, int):
        return None
    try:
        name = LlamaFileType(value).name
    except ValueError:
        return None
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")
