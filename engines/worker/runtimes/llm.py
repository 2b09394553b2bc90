"""LLM runtime: a Hugging Face causal (or seq2seq) language model.

Two ways to batch, chosen by the engine's `scheduler` config: "continuous" (the default for decoder-only
models: `decoder()` hands `engines.worker.scheduler` a `decoding.Decoder`, and rows join and leave
between decode steps) or "dynamic" (`run_batch`: one `generate` for a whole batch; also what a
seq2seq model, or one whose cache cannot be realigned, always gets).

Requests are dicts the API has validated: {"prompt" or "messages", "max_tokens", "temperature", "top_p",
"stop", "seed", "adapter"}. Each result is {"text", "finish_reason", "prompt_tokens", "completion_tokens"}, and
emit(index, {"type": "token", "text": delta}) streams a request's text as it is generated.

LoRA adapters (a request's `adapter`, contract.AdapterRef): PEFT adapters loaded onto this one base
model at their first request, kept while the model is, and counted in its size; rows of several
adapters and of the base share each forward, each under its own (`lora.LoraRows`).
"""

import functools
import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jinja2 import TemplateError
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.generation.streamers import BaseStreamer

from core.errors import InvalidInput
from engines.contract import EngineSpec, RuntimeLoadError
from engines.worker.runtimes import Emit, LlmRequest, release_memory, tensor_bytes
from engines.worker.runtimes.chat import plain_prompt, renders_tools, template_messages
from engines.worker.runtimes.decoding import (
    BASE_ADAPTER,
    Decoder,
    RowSampler,
    RowText,
    choose,
    row_result,
    sampler_for,
    supports_running_batch,
)
from engines.worker.runtimes.lora import LoraRows
from engines.worker.runtimes.prefix import prefix_cache_bytes

if TYPE_CHECKING:
    from engines.worker.runtimes.grammar import Constraint

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
BYTES_PER_PARAMETER = {"fp32": 4, "fp16": 2, "bf16": 2, "8bit": 1, "4bit": 0.5}


class LlmRuntime:
    """One language model on one device. Config keys are those of `LlmConfig` (precision, max_new_tokens,
    quantization, scheduler); a request's max_tokens is capped at the engine's max_new_tokens."""

    def __init__(self, spec: EngineSpec, device: str) -> None:
        self.spec = spec
        self.device = device
        self.precision = spec.config.get("precision", "fp32")
        self.quantization = spec.config.get("quantization", "none")
        self.max_new_tokens = spec.config.get("max_new_tokens", 512)
        self.scheduler = spec.config.get("scheduler", "continuous")
        self.model: Any = None  # transformers' model and tokenizer, once loaded
        self.tokenizer: Any = None
        self._decoder: Decoder | None = None
        self.lora: LoraRows | None = None  # the LoRA adapters loaded onto `model`, once one is
        self._weights_bytes = 0

    def estimate_bytes(self) -> int:
        config = self._model_config()
        with torch.device("meta"):
            model = _model_class(config).from_config(config)
        parameters = sum(parameter.numel() for parameter in model.parameters())
        per_parameter = BYTES_PER_PARAMETER[self.precision if self.quantization == "none" else self.quantization]
        return int(parameters * per_parameter) + self._prefix_bytes(model)

    def load(self) -> None:
        self._check_device()
        config = self._model_config()
        options: dict[str, Any] = {"dtype": DTYPES[self.precision], "local_files_only": True}
        if self.quantization != "none":
            options["quantization_config"] = BitsAndBytesConfig(
                load_in_8bit=self.quantization == "8bit",
                load_in_4bit=self.quantization == "4bit",
                bnb_4bit_compute_dtype=DTYPES[self.precision],
            )
            options["device_map"] = {"": self.device}
        try:
            model = _model_class(config).from_pretrained(self.spec.model, **options)
            tokenizer = AutoTokenizer.from_pretrained(self.spec.model, local_files_only=True)
        except Exception as exc:
            raise RuntimeLoadError(f"Cannot load the model at {self.spec.model}: {exc}") from exc
        if self.quantization == "none":
            model.to(self.device)
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise RuntimeLoadError(
                    f"The tokenizer at {self.spec.model} has neither a pad nor an EOS token to pad batches with.")
            tokenizer.pad_token = tokenizer.eos_token
        if not config.is_encoder_decoder:
            tokenizer.padding_side = "left"  # new tokens are appended on the right of every row
        self.model, self.tokenizer = model.eval(), tokenizer
        self._weights_bytes = tensor_bytes(model)

    def unload(self) -> None:
        self.model = self.tokenizer = self._decoder = self.lora = None
        release_memory(self.device)

    def loaded_bytes(self) -> int:
        """The weights' tensors (the loaded adapters' included), and the prefix cache's budget when this
        model decodes continuously."""
        if self.model is None:
            return 0
        return self._weights_bytes + self.adapter_bytes() + self._prefix_bytes(self.model)

    @property
    def adapters(self) -> dict[str, tuple[str, int]]:
        """The loaded LoRA adapters: name → (path, bytes)."""
        return self.lora.adapters if self.lora is not None else {}

    def adapter_bytes(self) -> int:
        return sum(size for _, size in list(self.adapters.values()))  # a copy: the model's thread may add one

    def adapter(self, request: LlmRequest) -> str:
        """The name of the LoRA adapter the request's rows run under (BASE_ADAPTER: none), loaded first
        if this model does not hold it yet (or holds it from another path). Called on the thread that
        runs the model (the scheduler's or the batcher's): PEFT changes the model's layers as it loads.
        InvalidInput naming `model` when the adapter cannot be loaded."""
        ref = request.get("adapter")
        if not ref:
            return BASE_ADAPTER
        name, path = ref["name"], ref["path"]
        if self.adapters.get(name, ("", 0))[0] != path:
            if self.lora is None:
                self.lora = LoraRows(self.model)
            self.lora.load(name, path)
        return name

    def forward(self, adapters: list[str], **inputs: Any) -> Any:
        """The model's forward over a batch whose rows run under `adapters` (one name per row)."""
        if self.lora is not None:
            self.lora.run(adapters)
        return self.model(**inputs)

    def _prefix_bytes(self, model: Any) -> int:
        continuous = self.scheduler == "continuous" and supports_running_batch(model)
        return prefix_cache_bytes(self.spec.config) if continuous else 0

    def prefix_cache_stats(self) -> dict[str, int] | None:
        """The prefix cache's entries, bytes, hits and tokens saved (None without one)."""
        decoder = self._decoder
        return decoder.prefix_cache.describe() if decoder is not None and decoder.prefix_cache else None

    @property
    def sampling_device(self) -> torch.device:
        """Where the logits are, so where each row's sampling generator lives."""
        return self.model.device

    def batch_key(self, request: LlmRequest) -> None:
        return None

    def decoder(self) -> Decoder | None:
        """A Decoder for iteration-level scheduling, or None: the engine asks for the dynamic batcher,
        or the model cannot have rows join its batch (seq2seq, sliding-window attention)."""
        if self.scheduler != "continuous" or not supports_running_batch(self.model):
            return None
        self._decoder = Decoder(self)
        return self._decoder

    def constraint(self, request: LlmRequest) -> "Constraint | None":
        """The grammar a request's output must follow (`response_format`, a forced tool call), or None."""
        grammar = request.get("grammar")
        if not grammar:
            return None
        from engines.worker.runtimes.grammar import Constraint, hf_tokenizer

        vocab_size = self.model.config.vocab_size
        return Constraint(hf_tokenizer(self.tokenizer, vocab_size), grammar, vocab_size=vocab_size)

    def token_limit(self, request: LlmRequest, prompt_tokens: int) -> int:
        """The most tokens a request may generate: its max_tokens, the engine's cap, the context left."""
        limit = min(request.get("max_tokens") or self.max_new_tokens, self.max_new_tokens)
        context = self._context_length()
        return min(limit, context - prompt_tokens) if context else limit

    def health(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "dtype": str(self.model.dtype).removeprefix("torch.") if self.model is not None else None,
            "parameters": self.model.num_parameters() if self.model is not None else None,
        }

    def run_batch(self, requests: Sequence[LlmRequest], emit: Emit) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = [{}] * len(requests)  # each replaced below
        rows: list[tuple[int, list[int]]] = []  # (request index, prompt ids)
        samplers: list[RowSampler] = []
        adapters: list[str] = []
        for index, request in enumerate(requests):
            try:
                adapter, ids, sampler = self.adapter(request), self.prompt_ids(request), sampler_for(self, request)
            except InvalidInput as exc:
                results[index] = {"error": str(exc), "param": exc.field}
                continue
            rows.append((index, ids))
            samplers.append(sampler)
            adapters.append(adapter)
        if not rows:
            return results

        limits = [min(requests[index].get("max_tokens") or self.max_new_tokens, self.max_new_tokens)
                  for index, _ in rows]
        context = self._context_length()
        if context:
            # Every row steps until the batch ends, so the longest prompt bounds how far the batch may go.
            limits = [min(limit, context - max(len(ids) for _, ids in rows)) for limit in limits]
        streamer = BatchStreamer(
            self.tokenizer,
            indexes=[index for index, _ in rows],
            limits=limits,
            stops=[[stop for stop in requests[index].get("stop") or [] if stop] for index, _ in rows],
            eos_ids=self.eos_ids(),
            emit=emit,
            cancelled=[requests[index].get("cancelled") for index, _ in rows],
        )
        batch = self.tokenizer.pad({"input_ids": [ids for _, ids in rows]}, return_tensors="pt").to(self.model.device)
        if self.lora is not None:
            self.lora.run(adapters)  # the rows keep their order through generate
        with torch.inference_mode():
            self.model.generate(
                **batch,
                max_new_tokens=max(limits),
                do_sample=False,  # each row's token is picked by its RowSampler, handed to generate as a one-hot choice
                logits_processor=LogitsProcessorList(
                    [] if all(sampler.plain for sampler in samplers) else [Chosen(samplers)]),
                stopping_criteria=StoppingCriteriaList([RowsDone(streamer)]),
                streamer=streamer,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=sorted(self.eos_ids()),
            )
        for row, (index, ids) in enumerate(rows):
            results[index] = row_result(self.tokenizer, streamer.rows[row], samplers[row], len(ids))
        return results

    def _check_device(self) -> None:
        on_cuda = self.device.startswith("cuda")
        if on_cuda and not torch.cuda.is_available():
            raise RuntimeLoadError(f"Device {self.device} was asked for, but torch sees no CUDA device on this worker.")
        if self.precision != "fp32" and not on_cuda:
            raise RuntimeLoadError(
                f"precision {self.precision} needs a CUDA device; this worker has {self.device}. Use fp32.")
        if self.quantization != "none" and not on_cuda:
            raise RuntimeLoadError(
                f"{self.quantization} quantization needs a CUDA device and bitsandbytes; "
                f"this worker has {self.device}. Set quantization to none."
            )
        if self.quantization != "none" and importlib.util.find_spec("bitsandbytes") is None:
            raise RuntimeLoadError(
                f"{self.quantization} quantization needs the bitsandbytes package, which this worker lacks. "
                "Install bitsandbytes or set quantization to none."
            )

    def _model_config(self) -> Any:
        model = self.spec.model
        if model.startswith(("/", ".", "~")) and not Path(model).expanduser().is_dir():
            raise RuntimeLoadError(f"No model directory at {model}.")
        try:
            return AutoConfig.from_pretrained(model, local_files_only=True)
        except Exception as exc:
            raise RuntimeLoadError(f"Cannot read the model config at {model}: {exc}") from exc

    def prompt_ids(self, request: LlmRequest) -> list[int]:
        """The request's prompt as token ids; InvalidInput when this model cannot take it."""
        messages = request.get("messages")
        if messages and self.tokenizer.chat_template:
            rendered, tools = template_messages(messages, request.get("tools"), renders_tools(self.tokenizer))
            try:
                text = self.tokenizer.apply_chat_template(rendered, tools=tools, add_generation_prompt=True,
                                                          tokenize=False)
            except TemplateError as exc:  # some templates refuse a conversation, e.g. roles out of turn
                raise InvalidInput(
                    f"This model's chat template refuses these messages: {exc}", field="messages") from exc
            ids = self.tokenizer(text, add_special_tokens=False).input_ids  # the template writes its own BOS
        else:
            text = plain_prompt(messages, request.get("tools")) if messages else request.get("prompt") or ""
            ids = self.tokenizer(text).input_ids
        context = self._context_length()
        if not ids:
            raise InvalidInput("The prompt is empty.", field="prompt")
        if context and len(ids) >= context:
            raise InvalidInput(
                f"The prompt is {len(ids)} tokens; this model reads at most {context} tokens, "
                "prompt and completion together.",
                field="messages" if messages else "prompt",
            )
        return ids

    def _context_length(self) -> int | None:
        if self.model.config.is_encoder_decoder:
            return None
        return getattr(self.model.config, "max_position_embeddings", None)

    def eos_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids


def _model_class(config: Any) -> Any:
    return AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM


class BatchStreamer(BaseStreamer):
    """Follows every row of a batched `generate`, each through its own `RowText` (its text, stop strings,
    EOS and token limit); a row whose client gave up is marked "cancelled" and sends nothing more."""

    def __init__(self, tokenizer: Any, *, indexes: list[int], limits: list[int], stops: list[list[str]],
                 eos_ids: set[int], emit: Emit, cancelled: list[Callable[[], bool] | None] | None = None) -> None:
        self.rows = [
            RowText(tokenizer, limit=limit, stops=row_stops, eos_ids=eos_ids,
                    emit=functools.partial(emit, index))
            for index, limit, row_stops in zip(indexes, limits, stops, strict=True)
        ]
        self.limits = limits
        self.cancelled = cancelled or [None] * len(indexes)  # per row: a callable, true once its client gave up
        self.prompt_length: int | None = None

    @property
    def finish_reasons(self) -> list[str | None]:
        return [row.finish_reason for row in self.rows]

    @property
    def texts(self) -> list[str]:
        return [row.text for row in self.rows]

    @property
    def ids(self) -> list[list[int]]:
        return [row.ids for row in self.rows]

    def put(self, value: torch.Tensor) -> None:
        if self.prompt_length is None:  # generate hands over the prompt first
            self.prompt_length = value.shape[-1]
            return
        for row, cancelled, token in zip(self.rows, self.cancelled, value.reshape(-1).tolist(), strict=True):
            if row.finish_reason is None:
                if cancelled is not None and cancelled():
                    row.finish_reason = "cancelled"  # nothing more is sent: nobody listens
                else:
                    row.add(token)

    def end(self) -> None:
        for row in self.rows:
            if row.finish_reason is None:
                row.finish("length")


class RowsDone(StoppingCriteria):
    """Tells `generate` which rows are done: those the streamer finished, and those at their own token limit
    (counted here from the sequence length, so a row stops on the step it reaches its limit)."""

    def __init__(self, streamer: BatchStreamer) -> None:
        self.streamer = streamer

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        assert self.streamer.prompt_length is not None  # generate hands the streamer the prompt before asking
        generated = input_ids.shape[-1] - self.streamer.prompt_length
        done = [
            reason is not None or generated >= limit
            for reason, limit in zip(self.streamer.finish_reasons, self.streamer.limits)
        ]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class Chosen(LogitsProcessor):
    """Leaves only each row's RowSampler choice possible, so `generate`'s greedy pick takes it."""

    def __init__(self, samplers: list[RowSampler]) -> None:
        self.samplers = samplers

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        tokens = choose(scores, self.samplers)
        chosen = torch.full_like(scores, -float("inf"))
        chosen[torch.arange(scores.shape[0], device=scores.device), tokens] = 0
        return chosen
