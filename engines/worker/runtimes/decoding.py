"""Iteration-level decoding for a decoder-only LLM: rows join and leave a running batch between steps.

Written over transformers' DynamicCache rather than taken from its ContinuousBatchingManager
(`generate_batch`): on this 2-core CPU that manager decoded 16 prompts × 32 tokens at about half the
speed of one padded `generate` (`bench/decoding.py` measures both against this), while a padded batch
whose cache gains and loses rows keeps `generate`'s speed. The rows are left-aligned: every row ends at
the batch's last column, shorter ones padded on the left and masked out, so one forward per step
serves every row whatever its length.

`RowText` follows one row's text (stop strings, EOS, its token limit, deltas that add up to the
final text); `RowSampler` picks each row's token with its own temperature, top_p and seeded generator,
so a seeded row gives the same text whatever shares its batch.

Prefix caching (`prefix.PrefixCache`, bounded by the engine's `prefix_cache_mb`): a row that leaves the
batch leaves its computed keys and values behind, and a new prompt that starts the same way is prefilled
from them, computing only what follows. Reused KV is what the same tokens at the same positions would
compute again (attention is causal), so greedy text does not change.

LoRA adapters: each row runs under its request's adapter (`runtime.adapter(request)`, BASE_ADAPTER
for none), and rows of different adapters share every forward (`runtime.forward` is told the adapter
of each row: `lora.LoraRows`). A prefix computed under one adapter is reused only by rows of that adapter.
"""

import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer
from transformers.convert_slow_tokenizer import bytes_to_unicode

from core.errors import InvalidInput
from engines.contract import Event
from engines.worker.runtimes import LlmRequest
from engines.worker.runtimes.prefix import PrefixCache, prefix_cache_bytes

BASE_ADAPTER = "__base__"  # a row without a LoRA adapter (PEFT's own name for it in a mixed batch)

if TYPE_CHECKING:
    from engines.worker.runtimes.grammar import Constraint
    from engines.worker.runtimes.llamacpp import LlamaCppRuntime
    from engines.worker.runtimes.llm import LlmRuntime
    from engines.worker.scheduler import Waiting

    Decodes: TypeAlias = LlmRuntime | LlamaCppRuntime  # the runtimes whose rows these are

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer, (keys, values): each [rows, heads, tokens, dim]
Finished = dict[int, dict[str, Any]]  # row → its result


class Decoder:
    """One model's running rows, as `engines.worker.scheduler` drives them. `join(items)` prefills
    new requests (items with `.request` and `.emit(event)`) and picks their first token; `step()`
    decodes one token for every row; both return the rows that finished, {row: result}, which the
    caller then drops with `keep`. A request the model cannot take is refused by `join` with
    {"error", "param"} and takes no row.

    `prefix_cache` (a PrefixCache, or None when the engine's `prefix_cache_mb` is 0) holds the KV of
    rows that left; `keep` adds to it and `join` prefills from it."""

    def __init__(self, runtime: "LlmRuntime") -> None:
        self.runtime = runtime
        budget = prefix_cache_bytes(runtime.spec.config)
        self.prefix_cache = PrefixCache(budget) if budget else None
        self.reset()

    def reset(self) -> None:
        """Drop every row (after a failed step). The prefix cache stays: its entries are copies taken
        as rows left, which no later step writes to."""
        self.batch = RunningBatch(self.runtime)
        self.rows: list[Row] = []
        self.prompts: list[list[int]] = []  # each row's prompt ids
        self.last: torch.Tensor | None = None  # each row's newest token, fed to the next step

    @property
    def size(self) -> int:
        return len(self.rows)

    def join(self, items: Sequence["Waiting"]) -> tuple[list[tuple["Waiting", dict[str, Any]]], Finished]:
        refused: list[tuple[Waiting, dict[str, Any]]] = []
        prompts: list[list[int]] = []
        prefixes: list[tuple[KV, int] | None] = []
        new: list[Row] = []
        for item in items:
            try:
                adapter = self.runtime.adapter(item.request)
                ids = self.runtime.prompt_ids(item.request)
                row = Row(self.runtime, item, len(ids), adapter=adapter)
            except InvalidInput as exc:
                refused.append((item, {"error": str(exc), "param": exc.field}))
                continue
            entry, row.cached_tokens = (self.prefix_cache.match(ids, space=adapter) if self.prefix_cache is not None
                                        else (None, 0))
            prompts.append(ids)
            prefixes.append((entry.value, row.cached_tokens) if entry is not None else None)
            new.append(row)
        if not new:
            return refused, {}
        logits = self.batch.join(prompts, prefixes, [row.adapter for row in new])
        tokens = choose(logits, [row.sampler for row in new])
        first = len(self.rows)
        self.rows.extend(new)
        self.prompts.extend(prompts)
        self.last = tokens if self.last is None else torch.cat([self.last, tokens])
        return refused, added(self.rows, tokens.tolist(), first)

    def step(self) -> Finished:
        assert self.last is not None  # the scheduler steps only while rows run
        tokens = choose(self.batch.step(self.last), [row.sampler for row in self.rows])
        self.last = tokens
        return added(self.rows, tokens.tolist(), 0)

    def keep(self, rows: list[int]) -> None:
        if self.prefix_cache is not None:
            kept = set(rows)
            for row in range(self.size):
                if row not in kept:
                    self._save(self.prefix_cache, row)
        self.batch.keep(rows)
        self.rows = [self.rows[row] for row in rows]
        self.prompts = [self.prompts[row] for row in rows]
        self.last = (self.last[torch.tensor(rows, dtype=torch.long, device=self.last.device)]
                     if rows and self.last is not None else None)

    def _save(self, cache: PrefixCache, row: int) -> None:
        """Keep a leaving row's KV in the prefix cache: its prompt and the tokens fed back since (its
        last chosen token never was), unless an entry holds them all already."""
        length, space = self.batch.length(row), self.rows[row].adapter
        ids = (self.prompts[row] + self.rows[row].text.ids)[:length]
        if len(ids) < cache.min_tokens or cache.covers(ids, space=space):
            return
        kv = self.batch.row_kv(row)
        nbytes = sum(keys.nbytes + values.nbytes for keys, values in kv)
        if nbytes > cache.budget_bytes:  # `add` would refuse it: spare the copy
            return
        try:
            kv = [(keys.clone(), values.clone()) for keys, values in kv]  # the batch's own tensors go with the row
        except torch.OutOfMemoryError:  # the cache is an optimisation: the rows' results must still go out
            return
        cache.add(ids, kv, nbytes, space=space)


def added(rows: list["Row"], tokens: list[int], first: int) -> Finished:
    """Give rows[first:] their new tokens (a list, in row order); returns the rows that finished, {row: result}."""
    finished = {}
    for offset, token in enumerate(tokens):
        row = rows[first + offset]
        if row.text.add(token):
            finished[first + offset] = row.result()
    return finished


class Row:
    """One running request: its text so far (`text`), its sampler, and its prompt's size; the rows of
    either decoder (transformers here, llama.cpp in `llamacpp`) are these. `cached_tokens`: how many of
    its prompt tokens came from the prefix cache rather than being computed; `adapter`: the LoRA
    adapter it runs under (BASE_ADAPTER: none)."""

    def __init__(self, runtime: "Decodes", item: "Waiting", prompt_tokens: int, cached_tokens: int = 0,
                 adapter: str = BASE_ADAPTER) -> None:
        request = item.request
        self.prompt_tokens, self.cached_tokens, self.adapter = prompt_tokens, cached_tokens, adapter
        self.text = RowText(runtime.tokenizer, limit=runtime.token_limit(request, prompt_tokens),
                            stops=[stop for stop in request.get("stop") or [] if stop], eos_ids=runtime.eos_ids(),
                            emit=item.emit)
        self.sampler = sampler_for(runtime, request)
        self.tokenizer = runtime.tokenizer

    def result(self) -> dict[str, Any]:
        return row_result(self.tokenizer, self.text, self.sampler, self.prompt_tokens, self.cached_tokens)


def sampler_for(runtime: "Decodes", request: LlmRequest) -> "RowSampler":
    """The RowSampler a request asks for (its sampling, bias, penalties, grammar and logprobs)."""
    return RowSampler(request.get("temperature"), request.get("top_p"), request.get("seed"), runtime.sampling_device,
                      logit_bias=request.get("logit_bias"), frequency_penalty=request.get("frequency_penalty"),
                      presence_penalty=request.get("presence_penalty"), constraint=runtime.constraint(request),
                      top_logprobs=request.get("logprobs"))


_BYTE_OF = {char: byte for byte, char in bytes_to_unicode().items()}  # byte-level BPE's alphabet, reversed
_SENTENCEPIECE_BYTE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def token_bytes(tokenizer: Any, token: int, piece: str) -> list[int]:
    """The bytes a token stands for (OpenAI's `bytes`: a token may hold part of a UTF-8 character,
    which its decoded text shows as U+FFFD): through byte-level BPE's alphabet (GPT-2, Llama 3,
    SmolLM2) or SentencePiece's <0xNN> byte tokens, else the decoded text's own bytes."""
    name = tokenizer.convert_ids_to_tokens(token)
    if isinstance(name, str):
        if all(char in _BYTE_OF for char in name):
            return [_BYTE_OF[char] for char in name]
        if match := _SENTENCEPIECE_BYTE.match(name):
            return [int(match[1], 16)]
    return list(piece.encode())


def row_result(tokenizer: Any, text: "RowText", sampler: "RowSampler", prompt_tokens: int,
               cached_tokens: int = 0) -> dict[str, Any]:
    """A finished row's result: its text, why it ended, its token counts (`cached_tokens`: prompt
    tokens the prefix cache supplied), and its logprobs if asked."""
    result: dict[str, Any] = {
        "text": text.text, "finish_reason": text.finish_reason, "prompt_tokens": prompt_tokens,
        "cached_tokens": cached_tokens, "completion_tokens": len(text.ids)}
    if sampler.top_logprobs is not None:
        def entry(token: int, logprob: float) -> dict[str, Any]:
            piece = tokenizer.decode([token], skip_special_tokens=False, clean_up_tokenization_spaces=False)
            return {"token": piece, "logprob": logprob, "bytes": token_bytes(tokenizer, token, piece)}

        result["logprobs"] = [{**entry(token, logprob), "top_logprobs": [entry(*alt) for alt in alternatives]}
                              for token, logprob, alternatives in sampler.logprobs[: len(text.ids)]]
    return result


class RunningBatch:
    """The rows decoding together on one model: their KV cache, attention mask, positions and adapters.

    `join(prompts, prefixes, adapters)` prefills new rows (appended at the end) and returns their
    next-token logits; `step(tokens)` feeds every row its last token and returns the next logits;
    `keep(rows)` drops the others. Rows are positions in this batch, in the order they joined and
    survived; each row's tokens are its last `length(row)` columns. Every forward goes through
    `runtime.forward(adapters, ...)`, each row under its own LoRA adapter."""

    def __init__(self, runtime: "LlmRuntime") -> None:
        self.runtime = runtime
        self.model = runtime.model
        self.device = self.model.device
        self.cache: Any = None  # a DynamicCache while rows run
        self.mask: Any = None  # [rows, columns]: 1 where a row has a token, 0 where it is padded
        self.adapters: list[str] = []  # each row's LoRA adapter (BASE_ADAPTER: none)

    @property
    def size(self) -> int:
        return 0 if self.mask is None else self.mask.shape[0]

    def length(self, row: int) -> int:
        """How many tokens a row has in the cache."""
        return int(self.mask[row].sum())

    def row_kv(self, row: int) -> KV:
        """One row's keys and values, per layer: [(keys, values)], each [1, heads, length, dim] (views into
        the batch's tensors: clone them to keep them)."""
        length = self.length(row)
        return [(layer.keys[row:row + 1, :, -length:], layer.values[row:row + 1, :, -length:])
                for layer in self.cache.layers]

    @torch.inference_mode()
    def join(self, prompts: list[list[int]], prefixes: list[tuple[KV, int] | None] | None = None,
             adapters: list[str] | None = None) -> torch.Tensor:
        """`prefixes`, one per prompt: None, or (kv, length) where kv (as `row_kv` gives) holds at least
        the prompt's first `length` tokens, already computed under that row's adapter; that prompt is
        prefilled from there. `adapters`: each prompt's LoRA adapter (default: none)."""
        prefixes = prefixes or [None] * len(prompts)
        adapters = adapters or [BASE_ADAPTER] * len(prompts)
        # Cached and uncached prompts go in separate forwards: together, an uncached row would be padded
        # by the longest cached prefix and a cached row by the longest uncached prompt.
        groups = [[row for row, prefix in enumerate(prefixes) if prefix is None],
                  [row for row, prefix in enumerate(prefixes) if prefix is not None]]
        parts = [self._prefill([prompts[row] for row in group], [prefixes[row] for row in group],
                               [adapters[row] for row in group])
                 for group in groups if group]
        cache, mask = _stacked([(cache, mask) for cache, mask, _ in parts])
        logits = torch.cat([logits for _, _, logits in parts])
        order = [row for group in groups for row in group]
        if order != sorted(order):
            index = torch.tensor(order, device=self.device).argsort()  # back to the prompts' order
            cache.batch_select_indices(index)
            mask, logits = mask[index], logits[index]
        self._merge(cache, mask)
        self.adapters += adapters
        return logits

    def _prefill(self, prompts: list[list[int]], prefixes: list[tuple[KV, int] | None],
                 adapters: list[str]) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """One forward over `prompts`, each from its cached prefix if it has one: (cache, mask, logits),
        with every row's tokens together at the right end."""
        cached = [prefix[1] if prefix else 0 for prefix in prefixes]
        seeded = max(cached)  # columns that come from the prefix cache, before those computed here
        width = max(len(ids) - done for ids, done in zip(prompts, cached))
        ids = torch.zeros((len(prompts), width), dtype=torch.long)
        mask = torch.zeros((len(prompts), seeded + width), dtype=torch.long)
        for row, (prompt, done) in enumerate(zip(prompts, cached)):
            rest = prompt[done:]
            ids[row, width - len(rest):] = torch.tensor(rest)
            mask[row, seeded - done:seeded] = 1
            mask[row, seeded + width - len(rest):] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        seeds = [prefix for prefix in prefixes if prefix is not None]  # all of them, or none (`join`)
        cache = DynamicCache(_seed(seeds, seeded) if seeded else None, config=self.model.config)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, seeded:]
        logits = self.runtime.forward(adapters, input_ids=ids, attention_mask=mask, position_ids=positions,
                                      cache=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
        if seeded and any(len(prompt) - done < width for prompt, done in zip(prompts, cached)):
            cache, mask = _packed(cache, mask)  # a rest shorter than the longest left a gap before it
        return cache, mask, logits

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = self.mask.sum(-1, keepdim=True)  # each row's next position: the tokens it holds
        self.mask = torch.cat([self.mask, self.mask.new_ones((self.size, 1))], dim=-1)
        return self.runtime.forward(self.adapters, input_ids=tokens.view(-1, 1), attention_mask=self.mask,
                                    position_ids=positions, cache=self.cache, use_cache=True).logits[:, -1]

    def keep(self, rows: list[int]) -> None:
        self.adapters = [self.adapters[row] for row in rows]
        if not rows:
            self.cache = self.mask = None
            return
        if len(rows) < self.size:
            index = torch.tensor(rows, device=self.device)
            self.cache.batch_select_indices(index)
            self.mask = self.mask[index]
        unused = int((self.mask.sum(0) == 0).cumprod(0).sum())  # leading columns no row uses any more
        if unused:
            self.mask = self.mask[:, unused:]
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, unused:], layer.values[:, :, unused:]

    def _merge(self, cache: Any, mask: torch.Tensor) -> None:
        if self.cache is None:
            self.cache, self.mask = cache, mask
        else:
            self.cache, self.mask = _stacked([(self.cache, self.mask), (cache, mask)])


def _stacked(parts: list[tuple[Any, torch.Tensor]]) -> tuple[Any, torch.Tensor]:
    """One (cache, mask) holding the rows of every (cache, mask) in `parts`, in order, left-padded to the
    widest. The first part's cache is reused."""
    if len(parts) == 1:
        return parts[0]
    cache, _ = parts[0]
    width = max(mask.shape[1] for _, mask in parts)
    for index, layer in enumerate(cache.layers):
        layer.keys = torch.cat([_left_pad(part.layers[index].keys, width) for part, _ in parts])
        layer.values = torch.cat([_left_pad(part.layers[index].values, width) for part, _ in parts])
    return cache, torch.cat([_left_pad(mask, width, dim=1) for _, mask in parts])


def _seed(prefixes: list[tuple[KV, int]], width: int) -> list[tuple[torch.Tensor, ...]]:
    """Per layer, the (keys, values) of every (kv, length) prefix's first `length` tokens, left-padded to `width`."""
    return [tuple(torch.cat([_left_pad(kv[layer][part][:, :, :length], width) for kv, length in prefixes])
                  for part in (0, 1))
            for layer in range(len(prefixes[0][0]))]


def _packed(cache: Any, mask: torch.Tensor) -> tuple[Any, torch.Tensor]:
    """`cache` and `mask` with each row's tokens moved together to the right end, in their order, and
    the columns no row uses any more dropped."""
    order = mask.sort(dim=1, stable=True).indices  # per row: its padding columns, then its tokens
    mask = mask.gather(1, order)
    unused = int((mask.sum(0) == 0).sum())
    for layer in cache.layers:
        index = order[:, None, :, None].expand_as(layer.keys)
        layer.keys = layer.keys.gather(2, index)[:, :, unused:]
        layer.values = layer.values.gather(2, index)[:, :, unused:]
    return cache, mask[:, unused:]


def _left_pad(tensor: torch.Tensor, width: int, dim: int = 2) -> torch.Tensor:
    missing = width - tensor.shape[dim]
    if not missing:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def supports_running_batch(model: Any) -> bool:
    """Whether rows may join and leave this model's batch: a decoder whose cache layers are plain
    (full attention). Sliding-window and recurrent layers keep state this batch does not realign."""
    config = model.config
    if config.is_encoder_decoder or getattr(config, "sliding_window", None):
        return False
    if any(kind != "full_attention" for kind in getattr(config, "layer_types", None) or []):
        return False
    probe = DynamicCache(config=config)
    return all(type(layer) is DynamicLayer for layer in probe.layers) if probe.layers else True


class RowSampler:
    """Per row: greedy (temperature 0) or sampled with its own temperature, top_p and generator; and
    what the request asks of each step besides: `logit_bias` ({token id: bias}), frequency and presence
    penalties (over the tokens this row generated), a `constraint` (a grammar's allowed tokens), and
    `top_logprobs` (None: no logprobs; else how many alternatives to record with each chosen token,
    in `logprobs`, as (token, logprob, [(alternative, logprob), ...]) from the model's own distribution)."""

    def __init__(self, temperature: float | None, top_p: float | None, seed: int | None, device: torch.device | str, *,
                 logit_bias: dict[int, float] | dict[str, float] | None = None, frequency_penalty: float | None = 0.0,
                 presence_penalty: float | None = 0.0, constraint: "Constraint | None" = None,
                 top_logprobs: int | None = None) -> None:
        self.temperature, self.top_p = temperature or 0.0, top_p or 1.0
        self.generator = None
        if self.temperature:
            self.generator = torch.Generator(device=device)
            if seed is None:
                self.generator.seed()
            else:
                self.generator.manual_seed(seed)
        self.bias = {int(token): float(bias) for token, bias in (logit_bias or {}).items()}
        self.frequency_penalty, self.presence_penalty = frequency_penalty or 0.0, presence_penalty or 0.0
        self.constraint = constraint
        self.top_logprobs = top_logprobs
        self.logprobs: list[tuple[int, float, list[tuple[int, float]]]] = []
        self.counts: dict[int, int] = {}  # token → times this row generated it (the penalties' memory)

    @property
    def plain(self) -> bool:
        """Greedy, with nothing else asked of a step: `generate`'s own greedy pick does the same."""
        return not (self.temperature or self.adjusts or self.top_logprobs is not None)

    @property
    def adjusts(self) -> bool:
        return bool(self.bias or self.frequency_penalty or self.presence_penalty or self.constraint is not None)

    def adjusted(self, logits: torch.Tensor) -> torch.Tensor:
        """This row's logits after its bias, penalties and constraint (a copy)."""
        logits = logits.clone()
        if self.bias:
            tokens = torch.tensor(list(self.bias), device=logits.device)
            logits[tokens] += logits.new_tensor(list(self.bias.values()))
        if self.counts and (self.frequency_penalty or self.presence_penalty):
            tokens = torch.tensor(list(self.counts), device=logits.device)
            counts = logits.new_tensor(list(self.counts.values()))
            logits[tokens] -= counts * self.frequency_penalty + self.presence_penalty
        if self.constraint is not None:
            self.constraint.mask(logits)
        return logits

    def chose(self, token: int, raw: torch.Tensor) -> None:
        """Record the chosen token: its count, its logprobs (from the unadjusted `raw` logits), the constraint."""
        if self.frequency_penalty or self.presence_penalty:
            self.counts[token] = self.counts.get(token, 0) + 1
        if self.top_logprobs is not None:
            logprobs = torch.log_softmax(raw.float(), dim=-1)
            top = logprobs.topk(self.top_logprobs) if self.top_logprobs else None
            self.logprobs.append((token, float(logprobs[token]),
                                  list(zip(top.indices.tolist(), top.values.tolist())) if top is not None else []))
        if self.constraint is not None:
            self.constraint.consume(token)


def choose(logits: torch.Tensor, samplers: Sequence["RowSampler"]) -> torch.Tensor:
    """The next token of every row (a tensor of ids), each by its own sampler."""
    raw = logits
    if any(sampler.adjusts for sampler in samplers):
        logits = logits.clone()
        for row, sampler in enumerate(samplers):
            if sampler.adjusts:
                logits[row] = sampler.adjusted(raw[row])
    tokens = logits.argmax(-1)
    rows = [row for row, sampler in enumerate(samplers) if sampler.temperature]
    if rows:
        temperatures = logits.new_tensor([[samplers[row].temperature] for row in rows])
        top_ps = logits.new_tensor([[samplers[row].top_p] for row in rows])
        probs = torch.softmax(logits[rows] / temperatures, dim=-1)
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # top_p keeps the most likely tokens up to that much probability mass (always at least one)
        sorted_probs[sorted_probs.cumsum(dim=-1) - sorted_probs >= top_ps] = 0
        for k, row in enumerate(rows):
            tokens[row] = order[k, torch.multinomial(sorted_probs[k], 1, generator=samplers[row].generator)]
    for row, (sampler, token) in enumerate(zip(samplers, tokens.tolist(), strict=True)):
        sampler.chose(token, raw[row])
    return tokens


class RowText:
    """One row's answer as its tokens come: decoded text, finished at EOS ("stop"), a stop string
    ("stop", the text cut before it) or its token limit ("length"). `add(token)` returns whether the
    row is finished. Text that may still change (a partial UTF-8 character) or may be the start of a
    stop string is held back until it is certain, so the emitted deltas add up to exactly `text`."""

    def __init__(self, tokenizer: Any, *, limit: int, stops: list[str], eos_ids: set[int],
                 emit: Callable[[Event], None]) -> None:
        self.tokenizer, self.limit, self.stops, self.eos_ids, self.emit = tokenizer, limit, stops, eos_ids, emit
        self.ids: list[int] = []
        self.text = ""
        self.sent = 0
        self.finish_reason: str | None = None

    def add(self, token: int) -> bool:
        if token in self.eos_ids:
            return self.finish("stop")
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        found = [at for at in (text.find(stop) for stop in self.stops) if at >= 0]
        if found:
            self.text = text[: min(found)]
            return self.finish("stop")
        self.text = text
        if len(self.ids) >= self.limit:
            return self.finish("length")
        certain = text.rstrip("\ufffd")
        held = max((k for stop in self.stops for k in range(1, len(stop)) if certain.endswith(stop[:k])), default=0)
        self._send(len(certain) - held)
        return False

    def finish(self, reason: str) -> bool:
        self.finish_reason = reason
        self._send(len(self.text))
        return True

    def _send(self, upto: int) -> None:
        if upto > self.sent:
            self.emit({"type": "token", "text": self.text[self.sent:upto]})
            self.sent = upto
