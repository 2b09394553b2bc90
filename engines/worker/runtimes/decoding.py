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
"""

import re

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer
from transformers.convert_slow_tokenizer import bytes_to_unicode

from blaze_site.errors import InvalidInput


class Decoder:
    """One model's running rows, as `engines.worker.scheduler` drives them. `join(items)` prefills
    new requests (items with `.request` and `.emit(event)`) and picks their first token; `step()`
    decodes one token for every row; both return the rows that finished, {row: result}, which the
    caller then drops with `keep`. A request the model cannot take is refused by `join` with
    {"error", "param"} and takes no row."""

    def __init__(self, runtime):
        self.runtime = runtime
        self.reset()

    def reset(self):
        self.batch = RunningBatch(self.runtime.model)
        self.rows = []
        self.last = None  # each row's newest token, fed to the next step

    @property
    def size(self):
        return len(self.rows)

    def join(self, items):
        refused, prompts, new = [], [], []
        for item in items:
            try:
                ids = self.runtime.prompt_ids(item.request)
                row = Row(self.runtime, item, len(ids))
            except InvalidInput as exc:
                refused.append((item, {"error": str(exc), "param": exc.field}))
                continue
            prompts.append(ids)
            new.append(row)
        if not new:
            return refused, {}
        logits = self.batch.join(prompts)
        tokens = choose(logits, [row.sampler for row in new])
        first = len(self.rows)
        self.rows.extend(new)
        self.last = tokens if self.last is None else torch.cat([self.last, tokens])
        return refused, self._added(tokens, first)

    def step(self):
        tokens = choose(self.batch.step(self.last), [row.sampler for row in self.rows])
        self.last = tokens
        return self._added(tokens, 0)

    def keep(self, rows):
        self.batch.keep(rows)
        self.rows = [self.rows[row] for row in rows]
        self.last = self.last[torch.tensor(rows, dtype=torch.long, device=self.last.device)] if rows else None

    def _added(self, tokens, first):
        finished = {}
        for offset, token in enumerate(tokens.tolist()):
            row = self.rows[first + offset]
            if row.text.add(token):
                finished[first + offset] = row.result()
        return finished


class Row:
    """One running request: its text so far (`text`), its sampler, and its prompt's size; the rows of
    either decoder (transformers here, llama.cpp in `llamacpp`) are these. `cached_tokens`: how many of
    its prompt tokens came from the prefix cache rather than being computed."""

    def __init__(self, runtime, item, prompt_tokens, cached_tokens=0):
        request = item.request
        self.prompt_tokens, self.cached_tokens = prompt_tokens, cached_tokens
        self.text = RowText(runtime.tokenizer, limit=runtime.token_limit(request, prompt_tokens),
                            stops=[stop for stop in request.get("stop") or [] if stop], eos_ids=runtime.eos_ids(),
                            emit=item.emit)
        self.sampler = sampler_for(runtime, request)
        self.tokenizer = runtime.tokenizer

    def result(self):
        return row_result(self.tokenizer, self.text, self.sampler, self.prompt_tokens, self.cached_tokens)


def sampler_for(runtime, request):
    """The RowSampler a request asks for (its sampling, bias, penalties, grammar and logprobs)."""
    return RowSampler(request.get("temperature"), request.get("top_p"), request.get("seed"), runtime.sampling_device,
                      logit_bias=request.get("logit_bias"), frequency_penalty=request.get("frequency_penalty"),
                      presence_penalty=request.get("presence_penalty"), constraint=runtime.constraint(request),
                      top_logprobs=request.get("logprobs"))


_BYTE_OF = {char: byte for byte, char in bytes_to_unicode().items()}  # byte-level BPE's alphabet, reversed
_SENTENCEPIECE_BYTE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def token_bytes(tokenizer, token, piece):
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


def row_result(tokenizer, text, sampler, prompt_tokens, cached_tokens=0):
    """A finished row's result: its text, why it ended, its token counts (`cached_tokens`: prompt
    tokens the prefix cache supplied), and its logprobs if asked."""
    result = {"text": text.text, "finish_reason": text.finish_reason, "prompt_tokens": prompt_tokens,
              "cached_tokens": cached_tokens, "completion_tokens": len(text.ids)}
    if sampler.top_logprobs is not None:
        def entry(token, logprob):
            piece = tokenizer.decode([token], skip_special_tokens=False, clean_up_tokenization_spaces=False)
            return {"token": piece, "logprob": logprob, "bytes": token_bytes(tokenizer, token, piece)}

        result["logprobs"] = [{**entry(token, logprob), "top_logprobs": [entry(*alt) for alt in alternatives]}
                              for token, logprob, alternatives in sampler.logprobs[: len(text.ids)]]
    return result


class RunningBatch:
    """The rows decoding together on one model: their KV cache, attention mask and positions.

    `join(prompts)` prefills new rows (appended at the end) and returns their next-token logits;
    `step(tokens)` feeds every row its last token and returns the next logits; `keep(rows)` drops the
    others. Rows are positions in this batch, in the order they joined and survived."""

    def __init__(self, model):
        self.model = model
        self.device = model.device
        self.cache = None
        self.mask = None  # [rows, columns]: 1 where a row has a token, 0 where it is padded

    @property
    def size(self):
        return 0 if self.mask is None else self.mask.shape[0]

    @torch.inference_mode()
    def join(self, prompts):
        width = max(len(ids) for ids in prompts)
        ids = torch.zeros((len(prompts), width), dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt):] = torch.tensor(prompt)
            mask[row, width - len(prompt):] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        cache = DynamicCache(config=self.model.config)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache,
                            use_cache=True, logits_to_keep=1).logits[:, -1]
        self._merge(cache, mask)
        return logits

    @torch.inference_mode()
    def step(self, tokens):
        positions = self.mask.sum(-1, keepdim=True)  # each row's next position: the tokens it holds
        self.mask = torch.cat([self.mask, self.mask.new_ones((self.size, 1))], dim=-1)
        return self.model(input_ids=tokens.view(-1, 1), attention_mask=self.mask, position_ids=positions,
                          cache=self.cache, use_cache=True).logits[:, -1]

    def keep(self, rows):
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

    def _merge(self, cache, mask):
        if self.cache is None:
            self.cache, self.mask = cache, mask
            return
        width = max(self.mask.shape[1], mask.shape[1])
        for old, new in zip(self.cache.layers, cache.layers, strict=True):
            old.keys = torch.cat([_left_pad(old.keys, width), _left_pad(new.keys, width)])
            old.values = torch.cat([_left_pad(old.values, width), _left_pad(new.values, width)])
        self.mask = torch.cat([_left_pad(self.mask, width, dim=1), _left_pad(mask, width, dim=1)])


def _left_pad(tensor, width, dim=2):
    missing = width - tensor.shape[dim]
    if not missing:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def supports_running_batch(model):
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

    def __init__(self, temperature, top_p, seed, device, *, logit_bias=None, frequency_penalty=0.0,
                 presence_penalty=0.0, constraint=None, top_logprobs=None):
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
        self.logprobs = []
        self.counts = {}  # token → times this row generated it (the penalties' memory)

    @property
    def plain(self):
        """Greedy, with nothing else asked of a step: `generate`'s own greedy pick does the same."""
        return not (self.temperature or self.adjusts or self.top_logprobs is not None)

    @property
    def adjusts(self):
        return bool(self.bias or self.frequency_penalty or self.presence_penalty or self.constraint is not None)

    def adjusted(self, logits):
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

    def chose(self, token, raw):
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


def choose(logits, samplers):
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

    def __init__(self, tokenizer, *, limit, stops, eos_ids, emit):
        self.tokenizer, self.limit, self.stops, self.eos_ids, self.emit = tokenizer, limit, stops, eos_ids, emit
        self.ids = []
        self.text = ""
        self.sent = 0
        self.finish_reason = None

    def add(self, token):
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

    def finish(self, reason):
        self.finish_reason = reason
        self._send(len(self.text))
        return True

    def _send(self, upto):
        if upto > self.sent:
            self.emit({"type": "token", "text": self.text[self.sent:upto]})
            self.sent = upto
