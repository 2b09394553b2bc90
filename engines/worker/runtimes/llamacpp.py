"""LLM runtime on llama.cpp: a GGUF model decoded with continuous batching, under the same scheduler,
rows, samplers, grammars and prefix cache as the transformers runtime.

Through llama-cpp-python's C bindings rather than its `Llama` class: `Llama` keeps one sequence per
context, and continuous batching needs one context holding up to `max_batch_size` sequences
(`n_seq_max`), each row decoding in its own. llama.cpp computes the logits; the token is picked by
the row's `RowSampler` (torch, on the CPU), so temperature, top_p, seed, logit_bias, penalties,
logprobs and JSON-schema constraints behave exactly as on the transformers runtime.

The KV cache holds one stream of `context_length` cells per sequence (`max_batch_size` of them), so
every row can always grow to its own `context_length` and attends over its own cells only. The prefix cache
keeps finished rows' sequence state in host memory (`llama_state_seq_get_data`) and restores the
shared start into a new row's sequence, trimmed to what matches.

LoRA adapters (a request's `adapter`): GGUF LoRA files loaded onto the model at their first request
(`llama_adapter_lora_init`). llama.cpp applies adapters to a whole context, not per sequence, so a
decode call runs under one adapter: each step decodes the rows of each adapter (and the base's) in a
call of their own, one after the other, and a prompt is prefilled under its row's adapter. Every row
still gives what its adapter alone gives; a batch of k adapters takes k calls a step
(docs/decisions.md). Saved prefixes are kept per adapter.
"""

import ctypes
import os
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

# llama.cpp's OpenMP threads otherwise spin at every barrier, taking the cores the worker's own threads
# (sampling, streaming to Redis) and the web process need: on the 2-core machine, with other processes
# busy, 7-9× fewer tokens/s (docs/decisions.md). Read when libgomp loads, so before llama_cpp.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import llama_cpp  # noqa: E402
import numpy  # noqa: E402
import torch  # noqa: E402
from jinja2 import TemplateError  # noqa: E402

from core.errors import InvalidInput  # noqa: E402
from engines.contract import EngineSpec, Message, RuntimeLoadError  # noqa: E402
from engines.worker.runtimes import LlmRequest  # noqa: E402
from engines.worker.runtimes.chat import plain_prompt, template_messages  # noqa: E402
from engines.worker.runtimes.decoding import BASE_ADAPTER, Finished, Row, added, choose  # noqa: E402
from engines.worker.runtimes.prefix import PrefixCache, prefix_cache_bytes  # noqa: E402

if TYPE_CHECKING:
    from engines.worker.runtimes.grammar import Constraint
    from engines.worker.scheduler import Waiting

CONTEXT_LENGTH = 2048  # tokens per row (prompt and completion) unless the engine says otherwise
KV_BYTES_PER_VALUE = 2  # llama.cpp's default KV type is f16
_backend = threading.Lock()
_backend_ready = False


@llama_cpp.llama_log_callback
def _quiet(level: int, text: bytes, user_data: Any) -> None:
    """llama.cpp logs every load to stderr; the worker's own log says what matters."""


def _init_backend() -> None:
    global _backend_ready
    with _backend:
        if not _backend_ready:
            llama_cpp.llama_log_set(_quiet, ctypes.c_void_p(0))
            llama_cpp.llama_backend_init()
            _backend_ready = True


def _meta(model: Any, key: str) -> str | None:
    """A GGUF metadata value as text, or None."""
    buffer = ctypes.create_string_buffer(256)
    size = llama_cpp.llama_model_meta_val_str(model, key.encode(), buffer, len(buffer))
    return buffer.value.decode() if size >= 0 else None


class GgufVocab:
    """A GGUF model's vocabulary with the few tokenizer methods the shared decoding code calls
    (`decode`, `convert_ids_to_tokens`), and `encode`. Text is llama.cpp's own tokenization."""

    def __init__(self, model: Any) -> None:
        self.vocab = llama_cpp.llama_model_get_vocab(model)
        self.size = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.eos_ids = {token for token in range(self.size) if llama_cpp.llama_vocab_is_eog(self.vocab, token)}
        self.bos_token_id = llama_cpp.llama_vocab_bos(self.vocab)
        self.eos_token_id = llama_cpp.llama_vocab_eos(self.vocab)

    def encode(self, text: str, *, add_special: bool) -> list[int]:
        data = text.encode()
        room = len(data) + 16
        tokens = (llama_cpp.llama_token * room)()
        count = llama_cpp.llama_tokenize(self.vocab, data, len(data), tokens, room, add_special, True)
        if count < 0:  # more tokens than bytes (cannot happen with byte-level vocabularies): retry the size asked
            room = -count
            tokens = (llama_cpp.llama_token * room)()
            count = llama_cpp.llama_tokenize(self.vocab, data, len(data), tokens, room, add_special, True)
        return list(tokens[:count])

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True,
               clean_up_tokenization_spaces: bool = False) -> str:
        if not ids:
            return ""
        array = (llama_cpp.llama_token * len(ids))(*ids)
        room = len(ids) * 16 + 16
        while True:
            buffer = ctypes.create_string_buffer(room)
            count = llama_cpp.llama_detokenize(self.vocab, array, len(ids), buffer, room, False,
                                               not skip_special_tokens)
            if count >= 0:
                return buffer.raw[:count].decode(errors="replace")
            room = -count + 1

    def convert_ids_to_tokens(self, token: int) -> str:
        return llama_cpp.llama_vocab_get_text(self.vocab, token).decode(errors="replace")

    def piece(self, token: int) -> str:
        """A token's text as the chat template should see it (its special tokens, such as BOS)."""
        return self.decode([token], skip_special_tokens=False) if token >= 0 else ""


class LlamaCppRuntime:
    """One GGUF model in one llama.cpp context. Config keys are those of `LlmConfig` that apply
    (max_new_tokens, max_batch_size, context_length, gpu_layers, threads, prefix_cache_mb)."""

    def __init__(self, spec: EngineSpec, device: str) -> None:
        self.spec = spec
        self.device = device
        config = spec.config
        self.max_new_tokens = config.get("max_new_tokens", 512)
        self.rows = config.get("max_batch_size", 16)
        self.context_length = config.get("context_length") or CONTEXT_LENGTH
        self.gpu_layers = config.get("gpu_layers")  # None: every layer on a CUDA worker, none on a CPU one
        # Every core, as llama-server: served on the 2-core machine, one thread was faster for one client
        # but slower for 8 and 32 (docs/decisions.md).
        self.threads = config.get("threads") or os.cpu_count() or 1
        self.prefix_bytes = prefix_cache_bytes(config)
        self.model: Any = None  # llama.cpp's model and context (C pointers), once loaded
        self.context: Any = None
        self.tokenizer: Any = None  # a GgufVocab, once loaded
        self.chat_template: str | None = None
        self._ll_tokenizer: Any = None
        self._decoder: LlamaDecoder | None = None
        self._ll_lock = threading.Lock()
        self.adapters: dict[str, tuple[str, int]] = {}  # loaded LoRA adapters: name → (path, bytes)
        self._loras: dict[str, Any] = {}  # name → llama.cpp's adapter (a C pointer)
        self._applied = BASE_ADAPTER  # the adapter the context decodes under now

    # -- the model cache's side ------------------------------------------------------------------

    def _path(self) -> Path:
        path = Path(self.spec.model).expanduser()
        if path.suffix != ".gguf" or not path.is_file():
            raise RuntimeLoadError(f"No GGUF file at {self.spec.model}: the llama.cpp runtime loads a .gguf file.")
        return path

    def estimate_bytes(self) -> int:
        """The file's size (the weights as stored) plus the KV cache and prefix cache this engine asks for."""
        path = self._path()
        _init_backend()
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True  # hyperparameters and vocabulary only: milliseconds
        model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        if not model:
            raise RuntimeLoadError(f"llama.cpp cannot read {path}: not a GGUF model it knows.")
        try:
            arch = _meta(model, "general.architecture")
            dims = [_meta(model, f"{arch}.{key}") for key in
                    ("block_count", "attention.head_count", "attention.head_count_kv", "embedding_length")]
        finally:
            llama_cpp.llama_model_free(model)
        try:
            kv = self._kv_bytes(*(int(value or "") for value in dims))
        except ValueError:  # a count missing, or one per layer (an array): count the file alone
            kv = 0
        return path.stat().st_size + kv + self.prefix_bytes

    def load(self) -> None:
        path = self._path()
        _init_backend()
        on_cuda = self.device.startswith("cuda")
        if self.gpu_layers and not llama_cpp.llama_supports_gpu_offload():
            raise RuntimeLoadError(
                f"gpu_layers is {self.gpu_layers}, but this worker's llama-cpp-python was built without GPU "
                "support. Reinstall it with CMAKE_ARGS=-DGGML_CUDA=on, or set gpu_layers to 0.")
        params = llama_cpp.llama_model_default_params()
        layers = self.gpu_layers if self.gpu_layers is not None else (-1 if on_cuda else 0)
        params.n_gpu_layers = 999 if layers < 0 else layers
        model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        if not model:
            raise RuntimeLoadError(f"llama.cpp could not load the model at {path}.")
        trained = llama_cpp.llama_model_n_ctx_train(model)
        if trained and self.context_length > trained:
            llama_cpp.llama_model_free(model)
            raise RuntimeLoadError(
                f"context_length {self.context_length} exceeds the {trained} tokens this model was trained on.")
        context_params = llama_cpp.llama_context_default_params()
        context_params.n_ctx = self.rows * self.context_length
        context_params.n_batch = max(512, self.rows)
        context_params.n_ubatch = max(512, self.rows)
        context_params.n_seq_max = self.rows
        # A KV stream per sequence (llama-server's default): each row attends over its own cells only. A
        # unified cache made every row's attention span every row's cells, masked: 8 prompts of 1,000
        # tokens prefilled several times slower.
        context_params.kv_unified = False
        context_params.n_threads = context_params.n_threads_batch = self.threads
        # Flash attention's results depend on how a prompt is split into calls (logits up to 0.67 apart for
        # the same 1,141-token prompt prefilled whole or from a cached start), so a prefix-cache hit changed
        # greedy answers. Without it the two agree exactly.
        context_params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        context_params.no_perf = True
        context = llama_cpp.llama_init_from_model(model, context_params)
        if not context:
            llama_cpp.llama_model_free(model)
            raise RuntimeLoadError(f"llama.cpp could not make a context of {context_params.n_ctx} tokens for "
                                   f"{path}: lower max_batch_size or context_length.")
        template = llama_cpp.llama_model_chat_template(model, None)
        self.model, self.context = model, context
        self.tokenizer = GgufVocab(model)
        self.chat_template = template.decode() if template else None
        self.n_batch = context_params.n_batch

    def unload(self) -> None:
        if self.context:
            llama_cpp.llama_free(self.context)
        if self.model:
            llama_cpp.llama_model_free(self.model)  # frees its adapters too
        self.model = self.context = self.tokenizer = self._ll_tokenizer = self._decoder = None
        self.adapters, self._loras, self._applied = {}, {}, BASE_ADAPTER

    def loaded_bytes(self) -> int:
        """Measured after load: the weights' tensors as llama.cpp holds them, the KV cells it allocated,
        and the prefix cache's budget."""
        if not self.model:
            return 0
        model = self.model
        kv = self._kv_bytes(llama_cpp.llama_model_n_layer(model), llama_cpp.llama_model_n_head(model),
                            llama_cpp.llama_model_n_head_kv(model), llama_cpp.llama_model_n_embd(model))
        return llama_cpp.llama_model_size(model) + kv + self.prefix_bytes + self.adapter_bytes()

    def adapter_bytes(self) -> int:
        return sum(size for _, size in list(self.adapters.values()))  # a copy: the model's thread may add one

    def adapter(self, request: LlmRequest) -> str:
        """The name of the LoRA adapter the request's rows run under (BASE_ADAPTER: none), loaded first if
        this model does not hold it yet (or holds it from another path). On the scheduler's thread.
        InvalidInput naming `model` when llama.cpp cannot load it."""
        ref = request.get("adapter")
        if not ref:
            return BASE_ADAPTER
        name, path = ref["name"], ref["path"]
        if self.adapters.get(name, ("", 0))[0] != path:
            if name in self._loras:  # registered again from another path
                self.apply(BASE_ADAPTER)
                llama_cpp.llama_adapter_lora_free(self._loras.pop(name))
                del self.adapters[name]
            lora = llama_cpp.llama_adapter_lora_init(self.model, str(Path(path).expanduser()).encode())
            if not lora:
                raise InvalidInput(f"The adapter {name} cannot be loaded from {path}: llama.cpp refused it (not a "
                                   "GGUF LoRA for this model).", field="model")
            self._loras[name] = lora
            self.adapters[name] = (path, Path(path).expanduser().stat().st_size)
        return name

    def apply(self, adapter: str) -> None:
        """Make the context decode under `adapter` (BASE_ADAPTER: none) from the next call on."""
        if adapter == self._applied:
            return
        if adapter == BASE_ADAPTER:
            status = llama_cpp.llama_set_adapters_lora(self.context, None, 0, None)
        else:
            status = llama_cpp.llama_set_adapters_lora(
                self.context, (llama_cpp.llama_adapter_lora_p_ctypes * 1)(self._loras[adapter]), 1,
                (ctypes.c_float * 1)(1.0))
        if status:
            raise RuntimeError(f"llama.cpp could not apply the adapter {adapter} (it returned {status}).")
        self._applied = adapter

    def _kv_bytes(self, layers: int, heads: int, kv_heads: int, width: int) -> int:
        per_layer = width // max(heads, 1) * kv_heads  # values per token per layer, for K and again for V
        return self.rows * self.context_length * layers * per_layer * 2 * KV_BYTES_PER_VALUE

    def batch_key(self, request: LlmRequest) -> None:
        return None

    def health(self) -> dict[str, Any]:
        return {"device": self.device, "runtime": "llama.cpp",
                "parameters": llama_cpp.llama_model_n_params(self.model) if self.model else None,
                "gpu_offload": bool(self.model) and self.device.startswith("cuda")
                and llama_cpp.llama_supports_gpu_offload()}

    def decoder(self) -> "LlamaDecoder":
        return LlamaDecoder(self)

    def prefix_cache_stats(self) -> dict[str, int] | None:
        decoder = self._decoder
        return decoder.prefix_cache.describe() if decoder is not None and decoder.prefix_cache else None

    # -- what the rows ask of it -----------------------------------------------------------------

    sampling_device = "cpu"  # llama.cpp hands its logits over in host memory

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.size

    def eos_ids(self) -> set[int]:
        return self.tokenizer.eos_ids

    def token_limit(self, request: LlmRequest, prompt_tokens: int) -> int:
        limit = min(request.get("max_tokens") or self.max_new_tokens, self.max_new_tokens)
        return min(limit, self.context_length - prompt_tokens)

    def constraint(self, request: LlmRequest) -> "Constraint | None":
        grammar = request.get("grammar")
        if not grammar:
            return None
        import llguidance.llamacpp

        from engines.worker.runtimes.grammar import Constraint

        with self._ll_lock:  # about a second to build: once per loaded model
            if self._ll_tokenizer is None:
                with warnings.catch_warnings():  # it calls llama_token_get_attr, deprecated, once per token
                    warnings.simplefilter("ignore", DeprecationWarning)
                    self._ll_tokenizer = llguidance.llamacpp.lltokenizer_from_vocab(self.tokenizer.vocab)
        return Constraint(self._ll_tokenizer, grammar, vocab_size=self.vocab_size)

    def prompt_ids(self, request: LlmRequest) -> list[int]:
        """The request's prompt as token ids, the chat rendered by the GGUF's own template; InvalidInput
        when this model cannot take it."""
        messages = request.get("messages")
        if messages and self.chat_template:
            text = self._render(self.chat_template, messages, request.get("tools"))
            ids = self.tokenizer.encode(text, add_special=False)  # the template writes its own BOS
        else:
            text = plain_prompt(messages, request.get("tools")) if messages else request.get("prompt") or ""
            ids = self.tokenizer.encode(text, add_special=True) if text else []
        if not ids:
            raise InvalidInput("The prompt is empty.", field="prompt")
        if len(ids) >= self.context_length:
            raise InvalidInput(
                f"The prompt is {len(ids)} tokens; this engine reads at most {self.context_length} tokens a request, "
                "prompt and completion together (its context_length).",
                field="messages" if messages else "prompt")
        return ids

    def _render(self, template: str, messages: list[Message], tools: list[dict[str, Any]] | None) -> str:
        from transformers.utils.chat_template_utils import render_jinja_template

        conversation, tools = template_messages(messages, tools, native="tools" in template)
        vocab = self.tokenizer
        try:
            rendered, _ = render_jinja_template(
                conversations=[conversation], tools=tools, chat_template=template, add_generation_prompt=True,
                bos_token=vocab.piece(vocab.bos_token_id), eos_token=vocab.piece(vocab.eos_token_id))
        except TemplateError as exc:
            raise InvalidInput(f"This model's chat template refuses these messages: {exc}", field="messages") from exc
        return rendered[0]


class LlamaDecoder:
    """The running rows of one llama.cpp context, as `engines.worker.scheduler` drives them (the same
    interface as `decoding.Decoder`): each row decodes in its own sequence; `join` prefills each new row's
    prompt (what the prefix cache does not supply) in its own decode calls, `step`
    decodes one token for every row in one batch, `keep` frees the cells of the rows that left."""

    def __init__(self, runtime: LlamaCppRuntime) -> None:
        self.runtime = runtime
        self.context = runtime.context
        self.memory = llama_cpp.llama_get_memory(runtime.context)
        self.width = max(runtime.n_batch, runtime.rows)
        self.batch = llama_cpp.llama_batch_init(self.width, 0, 1)
        self.prefix_cache = PrefixCache(runtime.prefix_bytes) if runtime.prefix_bytes else None
        runtime._decoder = self
        self._start()

    def _start(self) -> None:
        self.rows: list[Row] = []  # Row of each running request, in the scheduler's order
        self.seqs: list[int] = []  # each row's sequence id
        self.ids: list[list[int]] = []  # each row's tokens in the KV cache (prompt, then those fed back)
        self.last: list[int] = []  # each row's newest token, fed at the next step
        self.free = list(range(self.runtime.rows - 1, -1, -1))

    def __del__(self) -> None:
        batch, self.batch = getattr(self, "batch", None), None
        if batch is not None:
            llama_cpp.llama_batch_free(batch)

    @property
    def size(self) -> int:
        return len(self.rows)

    def reset(self) -> None:
        """After a failure: every sequence is dropped (the prefix cache's saved states stay valid)."""
        llama_cpp.llama_memory_clear(self.memory, True)
        self._start()

    def join(self, items: Sequence["Waiting"]) -> tuple[list[tuple["Waiting", dict[str, Any]]], Finished]:
        refused: list[tuple[Waiting, dict[str, Any]]] = []
        new: list[tuple[Row, int, list[int], int]] = []  # (row, sequence, prompt ids, tokens cached)
        for item in items:
            try:
                adapter = self.runtime.adapter(item.request)
                ids = self.runtime.prompt_ids(item.request)
                row = Row(self.runtime, item, len(ids), adapter=adapter)
            except InvalidInput as exc:
                refused.append((item, {"error": str(exc), "param": exc.field}))
                continue
            seq = self.free.pop()
            cached = row.cached_tokens = self._restore(ids, seq, adapter)
            new.append((row, seq, ids, cached))
        if not new:
            return refused, {}
        logits = self._prefill([(seq, ids, cached, row.adapter) for row, seq, ids, cached in new])
        tokens = choose(logits, [row.sampler for row, *_ in new])
        first = len(self.rows)
        for (row, seq, ids, _), token in zip(new, tokens.tolist(), strict=True):
            self.rows.append(row)
            self.seqs.append(seq)
            self.ids.append(list(ids))
            self.last.append(token)
        return refused, added(self.rows, tokens.tolist(), first)

    def step(self) -> Finished:
        batch = self.batch
        logits = numpy.empty((len(self.rows), self.runtime.vocab_size), dtype=numpy.float32)
        groups: dict[str, list[int]] = {}  # adapter → its rows: a decode call each (one adapter per context)
        for index, row in enumerate(self.rows):
            groups.setdefault(row.adapter, []).append(index)
        for adapter, rows in groups.items():
            for slot, index in enumerate(rows):
                batch.token[slot] = self.last[index]
                batch.pos[slot] = len(self.ids[index])
                batch.n_seq_id[slot] = 1
                batch.seq_id[slot][0] = self.seqs[index]
                batch.logits[slot] = 1
            batch.n_tokens = len(rows)
            self.runtime.apply(adapter)
            self._decode()
            logits[rows] = self._logits(len(rows))
        for ids, token in zip(self.ids, self.last, strict=True):
            ids.append(token)
        logits = torch.from_numpy(logits)
        tokens = choose(logits, [row.sampler for row in self.rows]).tolist()
        self.last = tokens
        return added(self.rows, tokens, 0)

    def keep(self, rows: list[int]) -> None:
        kept = set(rows)
        for index, seq in enumerate(self.seqs):
            if index not in kept:
                self._save(self.ids[index][: self.rows[index].prompt_tokens], seq, self.rows[index].adapter)
                llama_cpp.llama_memory_seq_rm(self.memory, seq, -1, -1)
                self.free.append(seq)
        self.rows = [self.rows[row] for row in rows]
        self.seqs = [self.seqs[row] for row in rows]
        self.ids = [self.ids[row] for row in rows]
        self.last = [self.last[row] for row in rows]

    def _prefill(self, prompts: list[tuple[int, list[int], int, str]]) -> torch.Tensor:
        """Decode each (sequence, prompt ids, tokens already cached, adapter) from its first uncached token,
        under its adapter; returns each prompt's next-token logits, in order.

        One sequence per llama_decode call (in chunks of up to n_batch tokens): prompts of several
        sequences decoded in one batch came out with logits a few hundredths apart from the same prompt
        decoded alone (enough to flip a greedy choice), while decode steps over many sequences matched
        single-sequence decoding token for token. So a row's answer does not depend on who joined with it."""
        logits = numpy.empty((len(prompts), self.runtime.vocab_size), dtype=numpy.float32)
        batch = self.batch
        for row, (seq, ids, cached, adapter) in enumerate(prompts):
            self.runtime.apply(adapter)
            for start in range(cached, len(ids), self.width):
                chunk = ids[start:start + self.width]
                for index, token in enumerate(chunk):
                    batch.token[index] = token
                    batch.pos[index] = start + index
                    batch.n_seq_id[index] = 1
                    batch.seq_id[index][0] = seq
                    batch.logits[index] = 0
                batch.logits[len(chunk) - 1] = start + len(chunk) == len(ids)
                batch.n_tokens = len(chunk)
                self._decode()
            logits[row] = self._logits(1)[0]
        return torch.from_numpy(logits)

    def _decode(self) -> None:
        status = llama_cpp.llama_decode(self.context, self.batch)
        if status:
            raise RuntimeError(f"llama.cpp could not decode this batch (llama_decode returned {status}).")

    def _logits(self, rows: int) -> numpy.ndarray:
        """The last decode's logits, one row per token that asked for them (a view: read it before the next decode)."""
        pointer = llama_cpp.llama_get_logits(self.context)
        return numpy.ctypeslib.as_array(pointer, shape=(rows, self.runtime.vocab_size))

    # -- the prefix cache --------------------------------------------------------------------------

    def _restore(self, ids: list[int], seq: int, adapter: str) -> int:
        """Put the longest cached start of `ids` (computed under `adapter`) into sequence `seq`; returns how
        many tokens it covers."""
        if self.prefix_cache is None:
            return 0
        entry, length = self.prefix_cache.match(ids, space=adapter)
        if entry is None:
            return 0
        state = entry.value
        if not llama_cpp.llama_state_seq_set_data(self.context, state, len(state), seq):
            llama_cpp.llama_memory_seq_rm(self.memory, seq, -1, -1)
            return 0
        llama_cpp.llama_memory_seq_rm(self.memory, seq, length, -1)  # keep only the shared start
        return length

    def _save(self, ids: list[int], seq: int, adapter: str) -> None:
        """Keep a leaving row's prompt (its sequence's state, cut to the prompt, copied to host memory).

        Its prompt only: the answer's KV came from decode steps, whose matrix products llama.cpp computes
        another way than a prompt's, so a next turn reusing it could answer differently (1 of 12 answers
        of a two-turn load did). The next turn's own prompt, answer included, is kept when it leaves."""
        cache = self.prefix_cache
        if cache is None or len(ids) < cache.min_tokens or cache.covers(ids, space=adapter):
            return
        llama_cpp.llama_memory_seq_rm(self.memory, seq, len(ids), -1)
        size = llama_cpp.llama_state_seq_get_size(self.context, seq)
        state = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(self.context, state, size, seq)
        if written:
            cache.add(ids, state, written, space=adapter)
