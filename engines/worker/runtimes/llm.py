"""LLM runtime: a Hugging Face causal (or seq2seq) language model answering a batch of requests in one `generate`.

Requests are dicts the API has validated: {"prompt" or "messages", "max_tokens", "temperature", "top_p",
"stop", "seed"}. Each result is {"text", "finish_reason", "prompt_tokens", "completion_tokens"}, and
emit(index, {"type": "token", "text": delta}) streams a request's text as it is generated.
"""

import importlib.util
from pathlib import Path

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

from blaze_site.errors import InvalidInput
from engines.contract import RuntimeLoadError
from engines.worker.runtimes import release_memory, tensor_bytes

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
BYTES_PER_PARAMETER = {"fp32": 4, "fp16": 2, "bf16": 2, "8bit": 1, "4bit": 0.5}


class LlmRuntime:
    """One language model on one device. Config keys are those of `LlmConfig` (precision, max_new_tokens,
    quantization); a request's max_tokens is capped at the engine's max_new_tokens."""

    def __init__(self, spec, device):
        self.spec = spec
        self.device = device
        self.precision = spec.config.get("precision", "fp32")
        self.quantization = spec.config.get("quantization", "none")
        self.max_new_tokens = spec.config.get("max_new_tokens", 512)
        self.model = None
        self.tokenizer = None

    def estimate_bytes(self):
        config = self._model_config()
        with torch.device("meta"):
            model = _model_class(config).from_config(config)
        parameters = sum(parameter.numel() for parameter in model.parameters())
        per_parameter = BYTES_PER_PARAMETER[self.precision if self.quantization == "none" else self.quantization]
        return int(parameters * per_parameter)

    def load(self):
        self._check_device()
        config = self._model_config()
        options = {"dtype": DTYPES[self.precision], "local_files_only": True}
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

    def unload(self):
        self.model = None
        self.tokenizer = None
        release_memory(self.device)

    def loaded_bytes(self):
        return tensor_bytes(self.model) if self.model is not None else 0

    def batch_key(self, request):
        return None

    def health(self):
        return {
            "device": self.device,
            "dtype": str(self.model.dtype).removeprefix("torch.") if self.model is not None else None,
            "parameters": self.model.num_parameters() if self.model is not None else None,
        }

    def run_batch(self, requests, emit):
        results = [None] * len(requests)
        rows = []  # (request index, prompt ids)
        for index, request in enumerate(requests):
            try:
                rows.append((index, self._prompt_ids(request)))
            except InvalidInput as exc:
                results[index] = {"error": str(exc), "param": exc.field}
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
            eos_ids=self._eos_ids(),
            emit=emit,
            cancelled=[requests[index].get("cancelled") for index, _ in rows],
        )
        samplers = [
            (row, requests[index]["temperature"], requests[index].get("top_p") or 1.0, requests[index].get("seed"))
            for row, (index, _) in enumerate(rows) if requests[index].get("temperature")
        ]
        batch = self.tokenizer.pad({"input_ids": [ids for _, ids in rows]}, return_tensors="pt").to(self.model.device)
        with torch.inference_mode():
            self.model.generate(
                **batch,
                max_new_tokens=max(limits),
                do_sample=False,  # sampling rows are sampled by RowSampler, which hands generate a one-hot choice
                logits_processor=LogitsProcessorList([RowSampler(samplers, self.model.device)] if samplers else []),
                stopping_criteria=StoppingCriteriaList([RowsDone(streamer)]),
                streamer=streamer,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=sorted(self._eos_ids()),
            )
        for row, (index, ids) in enumerate(rows):
            results[index] = {
                "text": streamer.texts[row],
                "finish_reason": streamer.finish_reasons[row],
                "prompt_tokens": len(ids),
                "completion_tokens": len(streamer.ids[row]),
            }
        return results

    def _check_device(self):
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

    def _model_config(self):
        model = self.spec.model
        if model.startswith(("/", ".", "~")) and not Path(model).expanduser().is_dir():
            raise RuntimeLoadError(f"No model directory at {model}.")
        try:
            return AutoConfig.from_pretrained(model, local_files_only=True)
        except Exception as exc:
            raise RuntimeLoadError(f"Cannot read the model config at {model}: {exc}") from exc

    def _prompt_ids(self, request):
        """The request's prompt as token ids; InvalidInput when this model cannot take it."""
        messages = request.get("messages")
        if messages and self.tokenizer.chat_template:
            try:
                text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            except TemplateError as exc:  # some templates refuse a conversation, e.g. roles out of turn
                raise InvalidInput(
                    f"This model's chat template refuses these messages: {exc}", field="messages") from exc
            ids = self.tokenizer(text, add_special_tokens=False).input_ids  # the template writes its own BOS
        else:
            if messages:
                text = "\n".join(f"{message['role']}: {message['content']}" for message in messages) + "\nassistant:"
            else:
                text = request.get("prompt") or ""
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

    def _context_length(self):
        if self.model.config.is_encoder_decoder:
            return None
        return getattr(self.model.config, "max_position_embeddings", None)

    def _eos_ids(self):
        eos = self.model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids


def _model_class(config):
    return AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM


class BatchStreamer(BaseStreamer):
    """Follows every row of a batched `generate`: decodes each row's new tokens, emits the new text, and marks the
    row finished at EOS ("stop"), a stop string ("stop", text cut before it) or its own token limit ("length").

    Text that may still change (a partial UTF-8 character) or may be the start of a stop string is held back
    until it is certain, so the emitted deltas of a row add up to exactly its final text.
    """

    def __init__(self, tokenizer, *, indexes, limits, stops, eos_ids, emit, cancelled=None):
        self.tokenizer = tokenizer
        self.indexes, self.limits, self.stops, self.eos_ids, self.emit = indexes, limits, stops, eos_ids, emit
        self.cancelled = cancelled or [None] * len(indexes)  # per row: a callable, true once its client gave up
        self.ids = [[] for _ in indexes]
        self.texts = [""] * len(indexes)
        self.sent = [0] * len(indexes)
        self.finish_reasons = [None] * len(indexes)
        self.prompt_length = None

    def put(self, value):
        if self.prompt_length is None:  # generate hands over the prompt first
            self.prompt_length = value.shape[-1]
            return
        for row, token in enumerate(value.reshape(-1).tolist()):
            if self.finish_reasons[row] is None:
                if self.cancelled[row] is not None and self.cancelled[row]():
                    self.finish_reasons[row] = "cancelled"  # nothing more is sent: nobody listens
                else:
                    self._add(row, token)

    def end(self):
        for row, reason in enumerate(self.finish_reasons):
            if reason is None:
                self._finish(row, "length")

    def _add(self, row, token):
        if token in self.eos_ids:
            return self._finish(row, "stop")
        self.ids[row].append(token)
        text = self.tokenizer.decode(self.ids[row], skip_special_tokens=True, clean_up_tokenization_spaces=False)
        found = [at for at in (text.find(stop) for stop in self.stops[row]) if at >= 0]
        if found:
            self.texts[row] = text[: min(found)]
            return self._finish(row, "stop")
        self.texts[row] = text
        if len(self.ids[row]) >= self.limits[row]:
            return self._finish(row, "length")
        certain = text.rstrip("\ufffd")
        held = max((k for stop in self.stops[row] for k in range(1, len(stop)) if certain.endswith(stop[:k])),
                   default=0)
        self._send(row, len(certain) - held)

    def _finish(self, row, reason):
        self.finish_reasons[row] = reason
        self._send(row, len(self.texts[row]))

    def _send(self, row, upto):
        if upto > self.sent[row]:
            self.emit(self.indexes[row], {"type": "token", "text": self.texts[row][self.sent[row]:upto]})
            self.sent[row] = upto


class RowsDone(StoppingCriteria):
    """Tells `generate` which rows are done: those the streamer finished, and those at their own token limit
    (counted here from the sequence length, so a row stops on the step it reaches its limit)."""

    def __init__(self, streamer):
        self.streamer = streamer

    def __call__(self, input_ids, scores, **kwargs):
        generated = input_ids.shape[-1] - self.streamer.prompt_length
        done = [
            reason is not None or generated >= limit
            for reason, limit in zip(self.streamer.finish_reasons, self.streamer.limits)
        ]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class RowSampler(LogitsProcessor):
    """Samples each sampling row with its own temperature, top_p and random generator (seeded when the request
    gives a seed, so a seeded row gives the same text whatever else shares its batch), then leaves only the chosen
    token possible so `generate`'s greedy pick takes it. Greedy rows (temperature 0) are left alone."""

    def __init__(self, samplers, device):
        self.rows = [row for row, *_ in samplers]
        self.temperatures = torch.tensor([[temperature] for _, temperature, _, _ in samplers], device=device)
        self.top_ps = torch.tensor([[top_p] for _, _, top_p, _ in samplers], device=device)
        self.generators = []
        for *_, seed in samplers:
            generator = torch.Generator(device=device)
            if seed is None:
                generator.seed()
            else:
                generator.manual_seed(seed)
            self.generators.append(generator)

    def __call__(self, input_ids, scores):
        probs = torch.softmax(scores[self.rows] / self.temperatures, dim=-1)
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # top_p keeps the most likely tokens up to that much probability mass (always at least one)
        sorted_probs[sorted_probs.cumsum(dim=-1) - sorted_probs >= self.top_ps] = 0
        chosen = [
            order[k, torch.multinomial(sorted_probs[k], 1, generator=generator)]
            for k, generator in enumerate(self.generators)
        ]
        rows = torch.tensor(self.rows, device=scores.device)
        scores[rows] = -float("inf")
        scores[rows, torch.cat(chosen)] = 0
        return scores
