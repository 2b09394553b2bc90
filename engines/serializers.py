"""Engine input and output. Per-kind configuration is validated by the serializer of that kind."""

from pathlib import Path

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core import errors
from core.serializers import StrictInput
from engines import catalog
from engines.contract import BATCH_DEFAULTS, MAX_QUEUE_DEFAULT, PREFIX_CACHE_MB, llm_runtime
from engines.models import Adapter, Engine, Route, RouteTarget


class BatchingConfig(serializers.Serializer):
    max_batch_size = serializers.IntegerField(min_value=1, max_value=256,
                                              default=BATCH_DEFAULTS["llm"]["max_batch_size"])
    batch_wait_ms = serializers.IntegerField(min_value=0, max_value=1000,
                                             default=BATCH_DEFAULTS["llm"]["batch_wait_ms"])
    max_queue = serializers.IntegerField(
        min_value=1, max_value=100_000, default=MAX_QUEUE_DEFAULT,
        help_text="Requests that may wait for a slot on each worker; more are refused at once (429).")


class LlmConfig(BatchingConfig):
    # Not filled in when absent: the model decides (`contract.llm_runtime`: a .gguf file runs on llama.cpp)
    runtime = serializers.ChoiceField(
        ["transformers", "llama.cpp"], required=False,
        help_text="What runs the model: transformers (a model directory or hub id) or llama.cpp (a .gguf file). "
                  "Left out: llama.cpp for a .gguf path, else transformers.")
    precision = serializers.ChoiceField(["fp32", "fp16", "bf16"], default="fp32")
    max_new_tokens = serializers.IntegerField(min_value=1, max_value=32768, default=512)
    quantization = serializers.ChoiceField(["none", "8bit", "4bit"], default="none")
    scheduler = serializers.ChoiceField(
        ["continuous", "dynamic"], default="continuous",
        help_text="continuous: requests join and leave the running batch at every decode step; dynamic: one "
                  "generate per batch, newcomers wait for it to end.")
    prefix_cache_mb = serializers.IntegerField(
        min_value=0, max_value=1_048_576, default=PREFIX_CACHE_MB,
        help_text="MiB of computed prompt prefixes kept per loaded model, so requests that start the same way "
                  "(a system prompt, earlier chat turns) skip that prefill; counted in the model's size. 0: off.")
    context_length = serializers.IntegerField(
        min_value=16, max_value=1_048_576, required=False,
        help_text="llama.cpp only: tokens a request may hold, prompt and completion (default 2048, at most what "
                  "the model was trained on). Its KV cache holds max_batch_size × this many tokens.")
    gpu_layers = serializers.IntegerField(
        min_value=-1, max_value=999, required=False,
        help_text="llama.cpp only: layers offloaded to the GPU (-1: all). Default: all on a CUDA worker, none on "
                  "a CPU one.")
    threads = serializers.IntegerField(min_value=1, max_value=256, required=False,
                                       help_text="llama.cpp only: CPU threads (default: every core).")

    LLAMA_CPP_ONLY = ("context_length", "gpu_layers", "threads")
    TRANSFORMERS_ONLY = {"precision": "fp32", "quantization": "none", "scheduler": "continuous"}


class DiffusionConfig(BatchingConfig):
    max_batch_size = serializers.IntegerField(min_value=1, max_value=64,
                                              default=BATCH_DEFAULTS["diffusion"]["max_batch_size"])
    precision = serializers.ChoiceField(["fp32", "fp16", "bf16"], default="fp32")
    max_steps = serializers.IntegerField(min_value=1, max_value=200, default=50)
    max_size = serializers.IntegerField(min_value=64, max_value=2048, default=1024)
    attention_slicing = serializers.BooleanField(default=False)
    vae_slicing = serializers.BooleanField(default=False)
    cpu_offload = serializers.ChoiceField(["none", "model", "sequential"], default="none")
    safety_checker = serializers.BooleanField(default=True)

    def validate_max_size(self, value):
        if value % 8:
            raise serializers.ValidationError("Must be a multiple of 8 (the VAE works in 8-pixel blocks).")
        return value


class EmbeddingConfig(BatchingConfig):
    max_batch_size = serializers.IntegerField(min_value=1, max_value=1024,
                                              default=BATCH_DEFAULTS["embedding"]["max_batch_size"])
    batch_wait_ms = serializers.IntegerField(min_value=0, max_value=1000,
                                             default=BATCH_DEFAULTS["embedding"]["batch_wait_ms"])
    normalize = serializers.BooleanField(default=True)
    max_seq_length = serializers.IntegerField(min_value=1, max_value=8192, default=256)
    # Not filled in when absent: engines stored before it existed read as torch too (EmbeddingRuntime)
    backend = serializers.ChoiceField(
        ["torch", "onnx"], default="torch",
        help_text="What runs the model: torch (the default), or ONNX Runtime on an ONNX export made once at "
                  "load under BLAZE_MODELS_DIR/onnx (faster on CPU).")


CONFIG_SERIALIZERS = {
    Engine.Kind.LLM: LlmConfig,
    Engine.Kind.DIFFUSION: DiffusionConfig,
    Engine.Kind.EMBEDDING: EmbeddingConfig,
}


class OutboundCaps(serializers.Serializer):
    """A remote engine's caps on what Blaze sends its host, shared by every web process
    (engines/serving/resilience/outbound.py). Absent or null: no cap."""

    max_rps = serializers.FloatField(
        required=False, allow_null=True, max_value=100_000,
        help_text="Requests a second sent to the host, evenly spaced; one over waits its turn.")
    max_concurrency = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=100_000,
        help_text="Requests in flight to the host at once (a stream until it ends); one over waits for a slot.")

    def validate_max_rps(self, value):
        if value is not None and value <= 0:
            raise serializers.ValidationError("Must be a positive number of requests a second (e.g. 5 or 0.5).")
        return value


def validate_config(kind, config, backend=Engine.Backend.LOCAL):
    """Defaults filled in and every value checked; raises ValidationError keyed by config field. A remote
    engine's config may set its outbound caps too (OutboundCaps; a null one is dropped)."""
    if backend != Engine.Backend.REMOTE:
        refused = {name: ["Only a remote engine caps what it sends its host."]
                   for name in OutboundCaps().fields if name in config}
        if refused:
            raise serializers.ValidationError(refused)
    bases = (StrictInput, *([OutboundCaps] if backend == Engine.Backend.REMOTE else []), CONFIG_SERIALIZERS[kind])
    serializer_class = type(f"Strict{CONFIG_SERIALIZERS[kind].__name__}", bases, {})
    serializer = serializer_class(data=config)
    serializer.is_valid(raise_exception=True)
    caps = OutboundCaps().fields
    return {name: value for name, value in serializer.validated_data.items() if not (name in caps and value is None)}


RESERVED_NAMES = {"new", "workers", "images", "routes", "models"}


@extend_schema_field({"type": "object", "description": "The settings of the engine's kind: LlmConfig, "
                                                       "DiffusionConfig or EmbeddingConfig (engines/serializers.py)."})
class ConfigField(serializers.JSONField):
    """Checked by the serializer of the engine's kind (`validate_config`)."""


class ModelFactsSerializer(serializers.Serializer):
    """What a worker reads of a model (engines/worker/catalog.py), and the workers that have it."""

    name = serializers.CharField(allow_null=True)
    kind = serializers.CharField(allow_null=True)
    runtime = serializers.CharField(allow_null=True)
    architecture = serializers.CharField(allow_null=True)
    dtype = serializers.CharField(allow_null=True)
    parameters = serializers.IntegerField(allow_null=True)
    size_bytes = serializers.IntegerField(allow_null=True)
    memory_bytes = serializers.IntegerField(allow_null=True, help_text="Estimated, at the default precision.")
    context_length = serializers.IntegerField(allow_null=True)
    chat_template = serializers.BooleanField(allow_null=True)
    workers = serializers.ListField(child=serializers.DictField(), help_text="[{id, fits}]: the workers with it.")


class ModelCheckSerializer(ModelFactsSerializer):
    """What the live workers found at a local engine's model (engines/catalog.py: Findings)."""

    warning = serializers.CharField(allow_null=True, help_text="Why the model was saved unchecked.")


class CatalogModelSerializer(ModelFactsSerializer):
    """A model some live worker can serve (engines/catalog.py: models)."""

    path = serializers.CharField()
    source = serializers.CharField(help_text="models_dir or hf_cache")


class DownloadSerializer(serializers.Serializer):
    """A model download from a Hugging Face hub onto a worker (engines/downloads.py; engines/selectors.py:
    download_list)."""

    id = serializers.CharField()
    repo = serializers.CharField(help_text="The hub's repository id, org/name.")
    revision = serializers.CharField(help_text="A branch, tag or commit.")
    worker = serializers.CharField(help_text="The worker whose models directory the model lands in.")
    endpoint = serializers.CharField(allow_blank=True, help_text="The hub the worker fetches from (its HF_ENDPOINT); "
                                                                 "empty until it starts.")
    target = serializers.CharField(allow_blank=True, help_text="The folder on the worker the model lands in, "
                                                               "BLAZE_MODELS_DIR/<name>; empty until it starts.")
    state = serializers.ChoiceField(["queued", "running", "done", "failed", "cancelled"])
    bytes_done = serializers.IntegerField()
    bytes_total = serializers.IntegerField(allow_null=True)
    files_done = serializers.IntegerField()
    files_total = serializers.IntegerField(allow_null=True)
    rate = serializers.FloatField(help_text="Bytes a second, over the last few seconds.")
    eta = serializers.FloatField(allow_null=True, help_text="Seconds left at that rate.")
    error = serializers.CharField(allow_blank=True, help_text="Why it failed.")
    requested_by = serializers.CharField(allow_blank=True)
    created_at = serializers.FloatField(help_text="Epoch seconds.")
    started_at = serializers.FloatField(allow_null=True)
    finished_at = serializers.FloatField(allow_null=True)
    cancelling = serializers.BooleanField(help_text="Cancel was asked; the worker has yet to stop it.")
    worker_lost = serializers.BooleanField(help_text="Queued or running on a worker with no recent heartbeat: it "
                                                     "goes on when that worker is back.")


class EngineSerializer(StrictInput, serializers.ModelSerializer):
    api_key = serializers.CharField(write_only=True, required=False, allow_blank=True, max_length=500)
    has_api_key = serializers.SerializerMethodField()
    config = ConfigField(required=False)
    model_check = serializers.SerializerMethodField(
        help_text="On a save that set a local engine's model: what the live workers found there (no weights "
                  "loaded); null otherwise.")

    class Meta:
        model = Engine
        fields = [
            "id", "name", "description", "kind", "backend", "model", "base_url", "api_key", "has_api_key",
            "config", "keep_alive_seconds", "enabled", "weight", "status", "status_detail", "created_at",
            "updated_at", "model_check",
        ]
        read_only_fields = ["id", "enabled", "status", "status_detail", "created_at", "updated_at"]

    def validate_name(self, value):
        if value in RESERVED_NAMES:
            raise serializers.ValidationError(f"'{value}' is reserved by the pages; choose another name.")
        if Adapter.objects.filter(name=value).exists():
            raise serializers.ValidationError(f"An adapter is named {value}: an engine's name is a model name too.")
        return value

    def get_has_api_key(self, engine) -> bool:
        return bool(engine.api_key)

    @extend_schema_field(ModelCheckSerializer(allow_null=True))
    def get_model_check(self, engine):
        checked = getattr(self, "findings", None)
        return checked.as_dict() if checked is not None else None

    def to_internal_value(self, data):
        if hasattr(data, "keys"):
            # A client changing these here would expect it to work; say where it is done instead.
            hints = {"enabled": "Read-only here: POST …/enable/ or …/disable/.",
                     "status": "Read-only: set by the workers."}
            refused = {
                name: [hint] for name, hint in hints.items()
                if name in data and (self.instance is None or data[name] != getattr(self.instance, name))
            }
            if refused:
                raise serializers.ValidationError(refused)
        return super().to_internal_value(data)

    def validate(self, attrs):
        current = self.instance
        kind = attrs.get("kind", current.kind if current else None)
        backend = attrs.get("backend", current.backend if current else Engine.Backend.LOCAL)
        model = attrs.get("model", current.model if current else "")
        base_url = attrs.get("base_url", current.base_url if current else "")
        if current and "kind" in attrs and attrs["kind"] != current.kind:
            raise serializers.ValidationError({"kind": ["The kind of an engine cannot change; register a new one."]})
        config = attrs.get("config", current.config if current else {})
        if current and self.partial and isinstance(config, dict):
            config = {**current.config, **config}  # PATCH changes the keys it names, keeps the rest
        if not isinstance(config, dict):
            raise serializers.ValidationError({"config": ["Must be a JSON object."]})
        try:
            attrs["config"] = validate_config(kind, config, backend)
        except serializers.ValidationError as exc:
            raise serializers.ValidationError({"config": exc.detail}) from exc
        if backend == Engine.Backend.REMOTE:
            if not base_url:
                raise serializers.ValidationError({"base_url": ["Required for a remote engine."]})
            if not base_url.startswith(("http://", "https://")):
                raise serializers.ValidationError({"base_url": ["Must be an http:// or https:// URL."]})
            if attrs.get("keep_alive_seconds") is not None:
                raise serializers.ValidationError({"keep_alive_seconds": [
                    "Only a local engine's model is kept loaded; leave it empty for a remote engine."]})
        else:
            if not model:
                raise serializers.ValidationError({"model": ["Required: a local model directory or a hub id."]})
            if kind == Engine.Kind.LLM:
                attrs["config"] = llm_config(model, attrs["config"])
            if current is None or model != current.model:
                self.findings = _checked_on_workers(model, kind)
            if base_url:
                raise serializers.ValidationError({"base_url": ["Only a remote engine has a base URL."]})
            if attrs.get("api_key"):
                raise serializers.ValidationError({"api_key": ["Only a remote engine has an API key."]})
        return attrs


def _checked_on_workers(model, kind):
    """The live workers' findings at a local engine's model (engines/catalog.py: `inspect`)."""
    try:
        return catalog.inspect(model, kind)
    except errors.InvalidInput as exc:
        raise serializers.ValidationError({exc.field: [exc.message]}) from exc


def llm_config(model, config):
    """A local LLM engine's config with its runtime named (chosen from the model when not given), once the
    model and the settings are checked to fit that runtime; the other runtime's defaults are left out."""
    runtime = llm_runtime(model, config)
    path = Path(model).expanduser()
    if runtime == "llama.cpp":
        if path.suffix != ".gguf":
            raise serializers.ValidationError({"model": [f"No GGUF file at {model}: the llama.cpp runtime loads a "
                                                         ".gguf file."]})
        refused = {name: [f"Only the transformers runtime takes this: llama.cpp runs the weights as the GGUF file "
                          f"stores them and schedules continuously. Leave {name} out."]
                   for name, default in LlmConfig.TRANSFORMERS_ONLY.items() if config.get(name, default) != default}
    else:
        refused = {name: ["Only the llama.cpp runtime takes this."] for name in LlmConfig.LLAMA_CPP_ONLY
                   if name in config}
    if refused:
        raise serializers.ValidationError({"config": refused})
    unused = LlmConfig.TRANSFORMERS_ONLY if runtime == "llama.cpp" else ()
    return {**{name: value for name, value in config.items() if name not in unused}, "runtime": runtime}


class AdapterSerializer(StrictInput, serializers.ModelSerializer):
    """A LoRA adapter on its base engine (the context's `engine`), in and out. Its path is checked on the
    live workers when it is set (engines/catalog.py: `inspect_adapter`); the name and the base's rules
    are the model's (Adapter.clean, run by the service)."""

    engine = serializers.CharField(source="engine.name", read_only=True)
    model = serializers.SerializerMethodField(
        help_text="What a client asks for: base:adapter (its own name works too).")
    check = serializers.SerializerMethodField(
        help_text="On a save that set the path: what the live workers found there (no weights loaded); null otherwise.")

    class Meta:
        model = Adapter
        fields = ["id", "name", "engine", "model", "path", "description", "enabled", "created_at", "updated_at",
                  "check"]
        read_only_fields = ["id", "created_at", "updated_at"]

    def get_model(self, adapter) -> str:
        return f"{adapter.engine.name}:{adapter.name}"

    @extend_schema_field(serializers.DictField(allow_null=True))
    def get_check(self, adapter):
        findings = getattr(self, "findings", None)
        return {**findings.facts, "workers": findings.workers, "warning": findings.warning or None} \
            if findings is not None else None

    def validate(self, attrs):
        if self.instance is not None and "name" in attrs and attrs["name"] != self.instance.name:
            raise serializers.ValidationError({"name": ["Fixed once added: clients ask for it by name. Remove the "
                                                        "adapter and add it again."]})
        engine = self.context["engine"]
        path = attrs.get("path")
        # Only a local LLM takes adapters (Adapter.clean says so): no path to check on another.
        local_llm = engine.kind == Engine.Kind.LLM and engine.backend == Engine.Backend.LOCAL
        if local_llm and path is not None and (self.instance is None or path != self.instance.path):
            try:
                self.findings = catalog.inspect_adapter(path, engine.model, llm_runtime(engine.model, engine.config))
            except errors.InvalidInput as exc:
                raise serializers.ValidationError({exc.field: [exc.message]}) from exc
        return attrs


class RouteTargetSerializer(StrictInput, serializers.ModelSerializer):
    """A route's target in and out, its engine by name. Engine and worker are fixed once added."""

    engine = serializers.SlugRelatedField(
        slug_field="name", queryset=Engine.objects.all(),
        error_messages={"does_not_exist": "No engine named '{value}'.", "invalid": "An engine name."},
    )
    kind = serializers.CharField(source="engine.kind", read_only=True)
    backend = serializers.CharField(source="engine.backend", read_only=True)

    class Meta:
        model = RouteTarget
        fields = ["id", "engine", "kind", "backend", "worker", "weight", "enabled", "created_at", "updated_at"]
        read_only_fields = ["id", "created_at", "updated_at"]

    def validate(self, attrs):
        if self.instance is not None:
            changed = {
                name: ["Fixed once added: remove the target and add another."] for name in ("engine", "worker")
                if name in attrs and attrs[name] != getattr(self.instance, name)
            }
            if changed:
                raise serializers.ValidationError(changed)
            attrs = {name: value for name, value in attrs.items() if name in ("weight", "enabled")}
        return attrs


MAX_FALLBACKS = 16


class FallbacksField(serializers.ListField):
    """A route's fallbacks by name, in the order they are tried: each a route, else an engine (as a /v1
    `model` names one). Written whole; the names are checked by the service (RouteFallback's rules)."""

    child = serializers.SlugField(max_length=64)

    def __init__(self, **kwargs):
        super().__init__(max_length=MAX_FALLBACKS, **kwargs)

    def get_attribute(self, route):
        return route.fallback_names()


class RouteSerializer(StrictInput, serializers.ModelSerializer):
    """A route in and out, with its targets (changed under …/targets/) and its fallbacks."""

    targets = RouteTargetSerializer(many=True, read_only=True)
    fallbacks = FallbacksField(required=False, help_text=(
        "Routes or engines (names, in order) tried when every target of this route has failed or is "
        "skipped; an answer from one carries the header X-Blaze-Fallback."))

    class Meta:
        model = Route
        fields = ["id", "name", "strategy", "sticky_ttl_seconds", "enabled", "description", "keep_prompts", "targets",
                  "fallbacks", "created_at", "updated_at"]
        read_only_fields = ["id", "created_at", "updated_at"]
