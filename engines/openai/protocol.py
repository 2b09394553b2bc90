"""Validation of OpenAI-style inference requests against the engine's caps.

Each serializer takes the engine in its context and returns the payload the worker's runtime runs.
"""

import base64
import binascii
import copy
import io
import re
import secrets

import jsonschema
from rest_framework import serializers

from accounts.models import MAX_PRIORITY
from engines.models import Engine
from engines.openai import tools as tools_module

MAX_SEED = 2**32 - 1
MAX_CHOICES = 8  # n: choices of one request, each a row of the batch


class RequestSerializer(serializers.Serializer):
    """Fields copied from one set built per class: DRF deep-copies every declared field for each
    instance, re-running each field's __init__, which was two thirds of validating a chat request.
    A shallow copy is enough here: these fields keep no per-request state (binding sets the copy's own
    name and parent; validators and options are only read)."""

    def get_fields(self):
        prototypes = type(self).__dict__.get("_prototypes")
        if prototypes is None:
            prototypes = super().get_fields()
            type(self)._prototypes = prototypes
        return {name: copy.copy(field) for name, field in prototypes.items()}

    def is_valid(self, *, raise_exception=False):
        """DRF's, then the bound copies of the fields let go: each points back at the serializer
        (`parent`), which holds them, a cycle per request that only the garbage collector's passes
        would free. Reference counting frees them now; `validated_data` and `errors` stay."""
        try:
            return super().is_valid(raise_exception=raise_exception)
        finally:
            self.__dict__.pop("fields", None)  # DRF's cached_property: a later use binds new copies


class StopField(serializers.Field):
    def to_internal_value(self, data):
        stops = [data] if isinstance(data, str) else data
        if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops) or len(stops) > 4:
            raise serializers.ValidationError("Must be a non-empty string or a list of up to 4 non-empty strings.")
        return stops


class MessageSerializer(RequestSerializer):
    role = serializers.ChoiceField(["system", "user", "assistant", "tool", "developer"])
    content = serializers.JSONField(required=False, allow_null=True)
    name = serializers.CharField(required=False, max_length=64)
    tool_calls = serializers.ListField(child=serializers.DictField(), required=False)  # an assistant's calls
    tool_call_id = serializers.CharField(required=False, max_length=200)  # a tool's answer: to which call

    def validate_content(self, value):
        if value is None:
            return ""
        if isinstance(value, str):
            return value
        if isinstance(value, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in value):
            return "".join(str(part.get("text", "")) for part in value)
        raise serializers.ValidationError("Must be a string or a list of text parts.")

    def validate(self, attrs):
        if attrs["role"] == "tool" and not attrs.get("tool_call_id"):
            raise serializers.ValidationError({"tool_call_id": ["A tool message answers a call: name its id."]})
        if "content" not in attrs and not attrs.get("tool_calls"):
            raise serializers.ValidationError({"content": ["This field is required."]})
        for index, each in enumerate(attrs.get("tool_calls") or []):
            function = each.get("function") if isinstance(each, dict) else None
            if not isinstance(function, dict) or not isinstance(function.get("name"), str) \
                    or not isinstance(function.get("arguments"), str):
                raise serializers.ValidationError(
                    {f"tool_calls.{index}": ["Must be {\"id\", \"type\": \"function\", \"function\": {\"name\", "
                                             "\"arguments\": a JSON string}}."]})
        attrs.setdefault("content", "")
        return attrs


class FunctionSerializer(RequestSerializer):
    name = serializers.RegexField(r"^[A-Za-z0-9_-]{1,64}$")
    description = serializers.CharField(required=False, allow_blank=True, max_length=4000)
    parameters = serializers.DictField(required=False)
    strict = serializers.BooleanField(required=False, allow_null=True)


class ToolSerializer(RequestSerializer):
    type = serializers.ChoiceField(["function"])
    function = FunctionSerializer()


# Fields of OpenAI's API a local engine does not offer: refused, with why, rather than ignored.
UNSUPPORTED = {
    "audio": "Local engines answer in text only.",
    "modalities": "Local engines answer in text only.",
    "functions": "Deprecated by OpenAI: use tools.",
    "function_call": "Deprecated by OpenAI: use tool_choice.",
    "prediction": "Predicted outputs are not supported by local engines.",
    "web_search_options": "Local engines cannot search the web.",
    "reasoning_effort": "Local engines have no reasoning effort setting.",
    "verbosity": "Local engines have no verbosity setting.",
    "service_tier": "Blaze has no service tiers: send priority (0-9) instead.",
    "prompt_cache_key": "A local engine's prefix cache needs no key: a prompt that starts as an earlier one reuses it.",
    "safety_identifier": "Not supported by local engines; send user to have it in the request log.",
    "metadata": "Blaze does not store completions.",
    "best_of": "Not supported: ask for n choices instead.",
    "suffix": "Insertion (suffix) is not supported by local engines.",
    "quality": "A diffusion pipeline has no quality setting: choose steps and guidance_scale.",
    "style": "A diffusion pipeline has no style setting: describe the style in the prompt.",
}


class EndpointSerializer(RequestSerializer):
    """A /v1 request's body. For a local engine it names only fields Blaze honours: any other is a 400
    naming it, as OpenAI answers an unknown parameter. A remote engine's request goes to its host as
    sent (not checked here)."""

    def to_internal_value(self, data):
        engine = self.context.get("engine")
        if engine is not None and engine.backend == Engine.Backend.LOCAL and isinstance(data, dict):
            for name in data:
                if name not in self.fields:
                    reason = UNSUPPORTED.get(name, "Unknown parameter.")
                    raise serializers.ValidationError(
                        {name: [f"{reason} (Blaze refuses what it would otherwise ignore.)"]})
        return super().to_internal_value(data)


class GenerationSerializer(EndpointSerializer):
    model = serializers.CharField()
    max_tokens = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    max_completion_tokens = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    temperature = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=2)
    top_p = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=1)
    stop = StopField(required=False, allow_null=True)
    seed = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=MAX_SEED)
    n = serializers.IntegerField(required=False, default=1, min_value=1, max_value=MAX_CHOICES)
    stream = serializers.BooleanField(required=False, default=False)
    stream_options = serializers.DictField(required=False, allow_null=True)
    user = serializers.CharField(required=False, allow_blank=True)  # in the request log, as OpenAI keeps it
    frequency_penalty = serializers.FloatField(required=False, allow_null=True, min_value=-2, max_value=2)
    presence_penalty = serializers.FloatField(required=False, allow_null=True, min_value=-2, max_value=2)
    logit_bias = serializers.DictField(child=serializers.FloatField(min_value=-100, max_value=100), required=False,
                                       allow_null=True)
    store = serializers.BooleanField(required=False, allow_null=True)

    def validate_logit_bias(self, value):
        if value and not all(token.isdigit() for token in value):
            raise serializers.ValidationError("Keys must be token ids (strings of digits).")
        return {int(token): bias for token, bias in (value or {}).items()}

    def validate_store(self, value):
        if value:
            raise serializers.ValidationError("Blaze does not store completions; omit it or send false.")
        return value

    def validate_stream_options(self, value):
        unknown = set(value or {}) - {"include_usage"}
        if unknown:
            raise serializers.ValidationError(f"Only include_usage is supported, not {', '.join(sorted(unknown))}.")
        return value
    # Blaze's own: the order a local LLM admits waiting requests in (9 first), at most the caller's own
    # (its API key's, else its role's; the context's `priority`), which is also the default.
    priority = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=MAX_PRIORITY)

    def validate(self, attrs):
        engine = self.context["engine"]
        allowed = self.context.get("priority", 0)
        priority = attrs.get("priority")
        if priority is not None and priority > allowed:
            raise serializers.ValidationError(
                {"priority": [f"Must be at most {allowed}, the priority of your API key or role."]})
        # A remote engine's host sets its own limit unless the operator set one here.
        cap = engine.config.get("max_new_tokens", 512 if engine.backend == Engine.Backend.LOCAL else None)
        max_tokens = attrs.get("max_completion_tokens") or attrs.get("max_tokens") or min(256, cap or 256)
        if cap is not None and max_tokens > cap:
            field = "max_completion_tokens" if attrs.get("max_completion_tokens") else "max_tokens"
            raise serializers.ValidationError({field: [f"Must be at most {cap} for engine {engine.name}."]})
        top_p = attrs.get("top_p")
        if top_p is not None and top_p <= 0:
            raise serializers.ValidationError({"top_p": ["Must be greater than 0."]})
        temperature = attrs.get("temperature")
        attrs["payload"] = {
            "max_tokens": max_tokens,
            "temperature": 1.0 if temperature is None else temperature,
            "top_p": 1.0 if top_p is None else top_p,
            "stop": attrs.get("stop") or [],
            # A seed chosen here makes a retried request (another worker) produce the same tokens.
            "seed": attrs["seed"] if attrs.get("seed") is not None else secrets.randbelow(MAX_SEED),
            "priority": allowed if priority is None else priority,
            "choices": attrs.get("n") or 1,  # rows of one request (an image request's `n` is its images)
            "logit_bias": attrs.get("logit_bias") or None,
            "frequency_penalty": attrs.get("frequency_penalty") or 0.0,
            "presence_penalty": attrs.get("presence_penalty") or 0.0,
        }
        attrs["include_usage"] = bool((attrs.get("stream_options") or {}).get("include_usage"))
        return attrs


class ResponseFormatSerializer(RequestSerializer):
    type = serializers.ChoiceField(["text", "json_object", "json_schema"])
    json_schema = serializers.DictField(required=False)

    def validate(self, attrs):
        if attrs["type"] != "json_schema":
            return attrs
        spec = attrs.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise serializers.ValidationError({"json_schema": ["Must be {\"name\", \"schema\", \"strict\"}."]})
        if not isinstance(spec.get("schema", {}), dict):
            raise serializers.ValidationError({"json_schema.schema": ["Must be a JSON schema (an object)."]})
        try:
            jsonschema.validators.validator_for(spec.get("schema", {})).check_schema(spec.get("schema", {}))
        except jsonschema.SchemaError as exc:
            raise serializers.ValidationError(
                {"json_schema.schema": [f"Not a valid JSON schema: {exc.message}"]}) from exc
        return attrs


class ChatCompletionSerializer(GenerationSerializer):
    messages = MessageSerializer(many=True, allow_empty=False)
    response_format = ResponseFormatSerializer(required=False, allow_null=True)
    tools = ToolSerializer(many=True, required=False, allow_null=True, max_length=128)
    tool_choice = serializers.JSONField(required=False, allow_null=True)
    parallel_tool_calls = serializers.BooleanField(required=False, default=True)
    logprobs = serializers.BooleanField(required=False, default=False)
    top_logprobs = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=20)

    def validate_tool_choice(self, value):
        if value is None or value in ("none", "auto", "required"):
            return value
        if isinstance(value, dict) and value.get("type") == "function" \
                and isinstance((value.get("function") or {}).get("name"), str):
            return value
        raise serializers.ValidationError(
            'Must be "none", "auto", "required" or {"type": "function", "function": {"name": …}}.')

    def validate(self, attrs):
        attrs = super().validate(attrs)
        tools = [dict(t, function=dict(t["function"])) for t in attrs.get("tools") or []]
        choice = attrs.get("tool_choice") or ("auto" if tools else "none")
        if choice != "none" and not tools:
            raise serializers.ValidationError({"tool_choice": ["There are no tools to choose from."]})
        if isinstance(choice, dict) and choice["function"]["name"] not in {t["function"]["name"] for t in tools}:
            raise serializers.ValidationError({"tool_choice": [f"No tool is named {choice['function']['name']}."]})
        if attrs.get("top_logprobs") is not None and not attrs.get("logprobs"):
            raise serializers.ValidationError({"top_logprobs": ["Needs logprobs: true."]})
        if attrs.get("logprobs") and attrs["stream"]:
            raise serializers.ValidationError({"logprobs": ["Not available on streamed answers yet; stream: false."]})
        response_format = attrs.get("response_format")
        grammar, forced = tools_module.grammar_for(tools, choice, response_format)
        attrs["tool_mode"] = forced or ("auto" if choice == "auto" else None)
        attrs["tool_choice"], attrs["tools"] = choice, tools
        attrs["payload"] = {
            **attrs["payload"], "prompt": None, "messages": [dict(m) for m in attrs["messages"]],
            # A named call shows the model only that function: the grammar holds it to those arguments anyway.
            "tools": [t["function"] for t in tools if not isinstance(choice, dict)
                      or t["function"]["name"] == choice["function"]["name"]] if choice != "none" else None,
            "grammar": grammar, "logprobs": (attrs.get("top_logprobs") or 0) if attrs.get("logprobs") else None,
        }
        return attrs


class CompletionSerializer(GenerationSerializer):
    prompt = serializers.CharField(trim_whitespace=False, allow_blank=False)
    echo = serializers.BooleanField(required=False, default=False)
    logprobs = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=5)
    response_format = ResponseFormatSerializer(required=False, allow_null=True)  # Blaze's: JSON completions

    def validate(self, attrs):
        attrs = super().validate(attrs)
        if attrs.get("logprobs") is not None and attrs["echo"]:
            raise serializers.ValidationError({"echo": ["Not with logprobs: the prompt's logprobs are not computed."]})
        if attrs.get("logprobs") is not None and attrs["stream"]:
            raise serializers.ValidationError({"logprobs": ["Not available on streamed answers yet; stream: false."]})
        grammar, _ = tools_module.grammar_for([], "none", attrs.get("response_format"))
        attrs["payload"] = {**attrs["payload"], "prompt": attrs["prompt"], "messages": None, "grammar": grammar,
                            "logprobs": attrs.get("logprobs")}
        return attrs


class EmbeddingSerializer(EndpointSerializer):
    model = serializers.CharField()

    input = serializers.JSONField()
    encoding_format = serializers.ChoiceField(["float", "base64"], default="float")
    dimensions = serializers.IntegerField(required=False, allow_null=True)
    user = serializers.CharField(required=False, allow_blank=True)

    def validate_input(self, value):
        texts = [value] if isinstance(value, str) else value
        if not isinstance(texts, list) or not texts or len(texts) > 2048:
            raise serializers.ValidationError("Must be a string or a list of 1 to 2048 strings.")
        if not all(isinstance(text, str) and text for text in texts):
            raise serializers.ValidationError("Every input must be a non-empty string (token arrays are not accepted).")
        return texts

    def validate_dimensions(self, value):
        if value is not None:
            raise serializers.ValidationError("Choosing dimensions is not supported; omit it.")
        return value

    def validate(self, attrs):
        attrs["payload"] = {"input": attrs["input"]}
        return attrs


_SIZE = re.compile(r"^(\d{2,5})x(\d{2,5})$")


class ImageSerializer(EndpointSerializer):
    model = serializers.CharField()
    prompt = serializers.CharField(max_length=4000)
    negative_prompt = serializers.CharField(required=False, allow_blank=True, max_length=4000)
    n = serializers.IntegerField(required=False, default=1, min_value=1, max_value=8)
    size = serializers.CharField(required=False, default="")
    steps = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    guidance_scale = serializers.FloatField(required=False, default=7.5, min_value=0, max_value=30)
    seed = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=MAX_SEED)
    response_format = serializers.ChoiceField(["b64_json", "url"], default="b64_json")
    user = serializers.CharField(required=False, allow_blank=True)

    def validate(self, attrs):
        engine = self.context["engine"]
        max_size, max_steps = engine.config.get("max_size", 1024), engine.config.get("max_steps", 50)
        size = attrs.get("size") or f"{min(512, max_size)}x{min(512, max_size)}"
        match = _SIZE.match(size)
        if not match:
            raise serializers.ValidationError({"size": ["Must look like 512x512."]})
        width, height = int(match[1]), int(match[2])
        if width > max_size or height > max_size:
            raise serializers.ValidationError({"size": [f"At most {max_size}x{max_size} on engine {engine.name}."]})
        if width % 8 or height % 8 or width < 64 or height < 64:
            raise serializers.ValidationError({"size": ["Width and height must be multiples of 8, at least 64."]})
        steps = attrs.get("steps") or min(30, max_steps)
        if steps > max_steps:
            raise serializers.ValidationError({"steps": [f"Must be at most {max_steps} on engine {engine.name}."]})
        attrs["payload"] = {
            "prompt": attrs["prompt"], "negative_prompt": attrs.get("negative_prompt") or None,
            "steps": steps, "width": width, "height": height, "guidance_scale": attrs["guidance_scale"],
            "seed": attrs["seed"] if attrs.get("seed") is not None else secrets.randbelow(MAX_SEED),
            "n": attrs["n"], "image": None, "strength": None,
        }
        return attrs


class ImageInputField(serializers.Field):
    """The img2img input: an uploaded PNG/JPEG file, or the same as a base64 string (data URLs too)."""

    MAX_BYTES = 20 * 1024 * 1024

    def to_internal_value(self, value):
        if hasattr(value, "read"):
            data = value.read() if value.size <= self.MAX_BYTES else None
        elif isinstance(value, str):
            try:
                data = base64.b64decode(value.split(",", 1)[-1], validate=True)
            except (binascii.Error, ValueError) as exc:
                raise serializers.ValidationError("Not valid base64.") from exc
        else:
            raise serializers.ValidationError("Upload a PNG or JPEG file, or send it base64-encoded.")
        if data is None or len(data) > self.MAX_BYTES:
            raise serializers.ValidationError(f"The image is larger than {self.MAX_BYTES // 2**20} MB.")
        from PIL import Image, UnidentifiedImageError

        try:
            Image.open(io.BytesIO(data)).verify()
        except (UnidentifiedImageError, OSError) as exc:
            raise serializers.ValidationError("Not a readable image (PNG or JPEG).") from exc
        return data


class ImageEditSerializer(ImageSerializer):
    image = ImageInputField()
    strength = serializers.FloatField(required=False, default=0.75, min_value=0.01, max_value=1)

    def validate(self, attrs):
        attrs = super().validate(attrs)
        attrs["payload"] = {**attrs["payload"], "image": base64.b64encode(attrs["image"]).decode(),
                            "strength": attrs["strength"]}
        return attrs


REQUEST_SERIALIZERS = {
    "chat": (ChatCompletionSerializer, Engine.Kind.LLM),
    "completion": (CompletionSerializer, Engine.Kind.LLM),
    "embedding": (EmbeddingSerializer, Engine.Kind.EMBEDDING),
    "image": (ImageSerializer, Engine.Kind.DIFFUSION),
    "image_edit": (ImageEditSerializer, Engine.Kind.DIFFUSION),
}
