"""Grammar-constrained decoding on one model, no serving stack: which grammar library Blaze should use.

    python bench/constrained.py               # SmolLM2-135M-Instruct (the demo LLM), 3 schemas + json_object, CPU
    python bench/constrained.py --quick       # same model, json_object + 1 schema, 1 sampled row: checks it runs
    python bench/constrained.py --llm-dir DIR --libraries llguidance,xgrammar   # any local model, some libraries

Candidates: llguidance, xgrammar, outlines-core (each one that imports; one that does not is reported).
For each library it measures:
- setup: converting the tokenizer (once per model) and compiling each grammar: `json_object` (any JSON
  object) and 3 nested JSON schemas (enums, arrays of objects, required fields, additionalProperties false,
  as OpenAI's `strict` asks; strings bounded with maxLength), median of --compile-repeats, caches off; the
  same schemas without maxLength (OpenAI's strict subset has none) compiled once; making a matcher per request;
- per-token mask cost: one decode loop per grammar like Blaze's (logits [rows, vocab], one matcher per
  row, one KV-cached forward per step), holding every library's rows: for each library one greedy row and
  --seeds rows sampled at --temperature (seeds 0..), all on the same chat prompt asking for JSON that
  matches the schema. Each step, per row: fill the row's allowed-token bitmask, apply it to the
  row's logits (disallowed → -inf; one shared numpy unpacking for all libraries, timed apart as apply),
  pick the token, feed it back to the matcher; until the matcher is done (or EOS) or --max-tokens.
  mask_us = the library's work per row and token, fill + consume: mean, p50, p99; each part's mean; and
  the first step's fill (a matcher may build its lexer lazily);
- the model forward of the same loop, so the mask's share is visible (a library's fill + apply + consume
  over that plus its rows' part of the forwards);
- correctness: every row's text must `json.loads` and validate against the schema (jsonschema); a row cut
  off at --max-tokens is counted apart (the model rambled; the grammar did not fail).
JSON is compact for every library (no free whitespace: a small model can loop on newlines otherwise).
Prints one JSON line per library (setup), one per (library, grammar), then a summary line.
"""

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LIBRARIES = ("llguidance", "xgrammar", "outlines-core")
# Strings are bounded (maxLength) so that a 135M model cannot ramble in one past --max-tokens.
STRING, INTEGER, NUMBER = {"type": "string", "maxLength": 32}, {"type": "integer"}, {"type": "number"}


def _object(properties):
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


SCHEMAS = {
    "order": _object({
        "order_id": STRING,
        "status": {"type": "string", "enum": ["pending", "shipped", "delivered", "cancelled"]},
        "customer": _object({"name": STRING, "email": STRING}),
        "items": {"type": "array", "maxItems": 4,
                  "items": _object({"sku": STRING, "quantity": INTEGER, "price": NUMBER})},
    }),
    "forecast": _object({
        "location": _object({"city": STRING, "country": STRING}),
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "array", "maxItems": 3, "items": _object({
            "day": {"type": "string", "enum": ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday",
                                               "sunday"]},
            "high": NUMBER, "low": NUMBER,
            "conditions": {"type": "string", "enum": ["sunny", "cloudy", "rain", "snow"]}})},
    }),
    "profile": _object({
        "username": STRING,
        "level": {"type": "string", "enum": ["beginner", "intermediate", "expert"]},
        "active": {"type": "boolean"},
        "skills": {"type": "array", "maxItems": 3, "items": _object({
            "name": STRING, "years": INTEGER, "tags": {"type": "array", "maxItems": 3, "items": STRING}})},
    }),
}
ANY_OBJECT = {"type": "object"}


def without_max_length(schema):
    """The schema as OpenAI's `strict` subset has it (no maxLength): its compile time is measured too."""
    if isinstance(schema, dict):
        return {key: without_max_length(value) for key, value in schema.items() if key != "maxLength"}
    return schema
REQUESTS = {
    "json_object": "Give a JSON object describing a cat: its name, its age and its favourite foods.",
    "order": "Record this order: order A-17 for Ada Lovelace (ada@example.com), two notebooks (sku NB-1) at 3.50 "
             "each and one pen (sku PN-2) at 1.25; it has shipped.",
    "forecast": "Call get_forecast with the forecast for Paris, France in celsius: Monday high 18 low 9 sunny, "
                "Tuesday high 15 low 8 rain.",
    "profile": "Make a profile for user kim: expert level, active, skills python (6 years, tags backend and data) "
               "and go (2 years, tag cli).",
}


def prompt_text(tokenizer, grammar):
    schema = ANY_OBJECT if grammar == "json_object" else SCHEMAS[grammar]
    ask = REQUESTS[grammar] + "\nReply with JSON only"
    ask += "." if grammar == "json_object" else f", matching this JSON schema: {json.dumps(schema)}"
    return tokenizer.apply_chat_template([{"role": "user", "content": ask}], tokenize=False, add_generation_prompt=True)


def byte_level_vocab(tokenizer):
    """Token id → the bytes it stands for, for a byte-level BPE tokenizer (GPT-2's byte ↔ unicode table)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = dict(zip(printable, printable, strict=True)), 0
    for byte in range(256):
        if byte not in chars:
            chars[byte], extra = 256 + extra, extra + 1
    to_byte = {chr(char): byte for byte, char in chars.items()}
    special = set(tokenizer.all_special_ids) | {int(i) for i in tokenizer.added_tokens_decoder}
    return {token_id: bytes(to_byte[ch] for ch in token) for token, token_id in tokenizer.get_vocab().items()
            if token_id not in special}


class Llguidance:
    name, module = "llguidance", "llguidance"

    def __init__(self, tokenizer, vocab):
        import llguidance
        import llguidance.hf

        self.llg = llguidance
        self.tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab)

    def compile(self, schema):
        grammar = self.llg.LLMatcher.grammar_from_json_schema(schema, defaults={"whitespace_flexible": False})
        matcher = self.llg.LLMatcher(self.tokenizer, grammar, log_level=0)
        if matcher.is_error():
            raise ValueError(matcher.get_error())
        return matcher  # the compiled grammar is a fresh matcher: requests deep_copy it

    def matcher(self, compiled):
        return compiled.deep_copy()

    def fill(self, matcher, bitmask, row):
        words = bitmask[row]
        matcher.unsafe_compute_mask_ptr(words.data_ptr(), words.numel() * 4)

    def consume(self, matcher, token):
        return matcher.consume_token(token)

    def done(self, matcher):
        return matcher.is_stopped()

    def reset(self, matcher):
        matcher.reset()

    def clone(self, matcher):
        return matcher.deep_copy()


class Xgrammar:
    name, module = "xgrammar", "xgrammar"

    def __init__(self, tokenizer, vocab):
        import xgrammar

        self.xgr = xgrammar
        info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab)
        self.compiler = xgrammar.GrammarCompiler(info, max_threads=2, cache_enabled=False)

    def compile(self, schema):
        return self.compiler.compile_json_schema(json.dumps(schema), any_whitespace=False, separators=(",", ":"),
                                                 strict_mode=True)

    def matcher(self, compiled):
        return self.xgr.GrammarMatcher(compiled)

    def fill(self, matcher, bitmask, row):
        matcher.fill_next_token_bitmask(bitmask, row)

    def consume(self, matcher, token):
        return matcher.accept_token(token)

    def done(self, matcher):
        return matcher.is_terminated()

    def reset(self, matcher):
        matcher.reset()

    def clone(self, matcher):
        return matcher.fork()


class OutlinesCore:
    name, module = "outlines-core", "outlines_core"

    def __init__(self, tokenizer, vocab):
        import outlines_core

        self.oc = outlines_core
        by_bytes = {}
        for token_id, text in byte_level_vocab(tokenizer).items():
            by_bytes.setdefault(text, []).append(token_id)
        # Special tokens stay out: their text ("<|im_start|>") would be allowed inside a JSON string.
        self.vocabulary = outlines_core.Vocabulary(tokenizer.eos_token_id, by_bytes)

    def compile(self, schema):
        regex = self.oc.json_schema.build_regex_from_schema(json.dumps(schema), "")
        return self.oc.Index(regex, self.vocabulary)

    def matcher(self, compiled):
        return self.oc.Guide(compiled)

    def fill(self, matcher, bitmask, row):
        words = bitmask[row]
        matcher.write_mask_into(words.data_ptr(), words.numel(), 4)

    def consume(self, matcher, token):
        if token == self.vocabulary.get_eos_token_id():
            return matcher.is_finished()  # a Guide refuses EOS even where its mask allows it: stop, don't advance
        try:
            matcher.advance(token, return_tokens=False)
        except ValueError:
            return False
        return True

    def done(self, matcher):
        return False  # a Guide has no stop: is_finished() only means "may stop here"; the row ends on EOS

    def reset(self, matcher):
        matcher.reset()

    def clone(self, matcher):
        return copy.copy(matcher)


ADAPTERS = {adapter.name: adapter for adapter in (Llguidance, Xgrammar, OutlinesCore)}


def version(module):
    from importlib.metadata import version as dist_version

    return dist_version(module.replace("_", "-"))


def micros(seconds):
    return round(seconds * 1e6, 1)


def p99(values):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]


def check(grammar, text):
    import jsonschema

    try:
        value = json.loads(text)
    except ValueError as exc:
        return f"json: {exc}"
    try:
        jsonschema.validate(value, ANY_OBJECT if grammar == "json_object" else SCHEMAS[grammar])
    except jsonschema.ValidationError as exc:
        return f"schema: {exc.message}"
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--llm-dir", default=str(ROOT / "var" / "models" / "smollm2-135m-instruct"))
    parser.add_argument("--libraries", default=",".join(LIBRARIES))
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--seeds", type=int, default=3, help="sampled rows beside the greedy one")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--compile-repeats", type=int, default=3)
    args = parser.parse_args()
    grammars = ["json_object", *SCHEMAS]
    if args.quick:
        grammars, args.seeds, args.compile_repeats, args.max_tokens = grammars[:2], 1, 1, 96

    import numpy
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

    tokenizer = AutoTokenizer.from_pretrained(args.llm_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(args.llm_dir, local_files_only=True, dtype=torch.float32).eval()
    vocab = model.config.vocab_size  # the logits' width: may exceed len(tokenizer) (padded embeddings)
    words = (vocab + 31) // 32
    eos_ids = {tokenizer.eos_token_id}
    label = Path(args.llm_dir).name
    per_lib = 1 + args.seeds
    prompts = {grammar: tokenizer(prompt_text(tokenizer, grammar), add_special_tokens=False,
                                  return_tensors="pt").input_ids for grammar in grammars}

    def apply(logits, bitmask, row):
        # numpy, one thread: torch would split 49k elements over its thread pool, and wake-ups cost more.
        allowed = numpy.unpackbits(bitmask[row].numpy().view(numpy.uint8), bitorder="little")[:vocab]
        logits[row].numpy()[allowed == 0] = -numpy.inf

    libs, compiled, setup = {}, {}, {}
    for name in args.libraries.split(","):
        adapter = ADAPTERS[name]
        try:
            started = time.perf_counter()
            lib = adapter(tokenizer, vocab)
            tokenizer_s = time.perf_counter() - started
            compiled[name], compile_ms = {}, {}
            for grammar in grammars:
                times = []
                while len(times) < args.compile_repeats and sum(times) < 2.0:  # a slow compile is timed once
                    started = time.perf_counter()
                    compiled[name][grammar] = lib.compile(ANY_OBJECT if grammar == "json_object" else SCHEMAS[grammar])
                    times.append(time.perf_counter() - started)
                compile_ms[grammar] = round(statistics.median(times) * 1e3, 2)
            strict_ms = {}
            for grammar, schema in SCHEMAS.items():
                started = time.perf_counter()
                lib.compile(without_max_length(schema))
                strict_ms[grammar] = round((time.perf_counter() - started) * 1e3, 2)
        except Exception as exc:  # noqa: BLE001 - a library that cannot run here is reported, not fatal
            print(json.dumps({"bench": "constrained", "library": name, "error": f"{type(exc).__name__}: {exc}"}))
            continue
        libs[name], setup[name] = lib, compile_ms
        print(json.dumps({"bench": "constrained", "library": name, "version": version(adapter.module),
                          "setup": True, "tokenizer_conversion_s": round(tokenizer_s, 3), "vocab": vocab,
                          "compile_ms": compile_ms, "compile_ms_without_maxlength": strict_ms}), flush=True)

    # One decode loop per grammar, every library's rows in it (one forward per step for all of them):
    # rows [k * per_lib, (k + 1) * per_lib) are library k's, the first of them greedy, the others sampled.
    results = {name: {} for name in libs}
    for grammar in grammars:
        owners = [name for name in libs for _ in range(per_lib)]
        rows = len(owners)
        matchers, matcher_us = [], {}
        for name, lib in libs.items():
            started = time.perf_counter()
            matchers += [lib.matcher(compiled[name][grammar]) for _ in range(per_lib)]
            matcher_us[name] = micros((time.perf_counter() - started) / per_lib)
        seeds = [None if row % per_lib == 0 else row % per_lib - 1 for row in range(rows)]
        generators = [None if seed is None else torch.Generator().manual_seed(seed) for seed in seeds]
        tokens, finished, errors = [[] for _ in range(rows)], [False] * rows, [None] * rows
        timing = {name: {"fill": [], "apply": [], "consume": [], "mask": [], "first": []} for name in libs}
        forward = []
        bitmask = torch.full((rows, words), -1, dtype=torch.int32)
        cache = DynamicCache(config=model.config)
        with torch.inference_mode():
            started = time.perf_counter()
            logits = model(input_ids=prompts[grammar].repeat(rows, 1), cache=cache, use_cache=True,
                           logits_to_keep=1).logits[:, -1].float()
            prefill_ms = (time.perf_counter() - started) * 1e3
            for step in range(args.max_tokens):
                chosen = [tokenizer.eos_token_id] * rows
                for row in range(rows):
                    if finished[row] or errors[row]:
                        continue
                    lib, times = libs[owners[row]], timing[owners[row]]
                    t0 = time.perf_counter()
                    lib.fill(matchers[row], bitmask, row)
                    t1 = time.perf_counter()
                    apply(logits, bitmask, row)
                    t2 = time.perf_counter()
                    if generators[row] is None:
                        token = int(logits[row].argmax())
                    else:
                        probs = torch.softmax(logits[row] / args.temperature, dim=-1)
                        token = int(torch.multinomial(probs, 1, generator=generators[row]))
                    t3 = time.perf_counter()
                    ok = lib.consume(matchers[row], token)
                    t4 = time.perf_counter()
                    times["fill"].append(t1 - t0)
                    times["apply"].append(t2 - t1)
                    times["consume"].append(t4 - t3)
                    times["mask"].append(t4 - t3 + t1 - t0)
                    if step == 0:
                        times["first"].append(t1 - t0)
                    if not ok:
                        errors[row] = f"matcher refused token {token} ({tokenizer.decode([token])!r})"
                        continue
                    chosen[row] = token
                    tokens[row].append(token)
                    finished[row] = token in eos_ids or lib.done(matchers[row])
                if all(finished[row] or errors[row] for row in range(rows)):
                    break
                started = time.perf_counter()
                logits = model(input_ids=torch.tensor(chosen).view(-1, 1), cache=cache,
                               use_cache=True).logits[:, -1].float()
                forward.append(time.perf_counter() - started)
        forward_s = sum(forward)
        for k, (name, lib) in enumerate(libs.items()):
            first_row = k * per_lib
            # Reset and clone on the greedy row: reset gives the first mask again; a clone advances alone.
            first_mask, after_reset, after_clone, twin_mask = (torch.full((1, words), -1, dtype=torch.int32)
                                                               for _ in range(4))
            lib.fill(lib.matcher(compiled[name][grammar]), first_mask, 0)
            lib.reset(matchers[first_row])
            lib.fill(matchers[first_row], after_reset, 0)
            twin = lib.clone(matchers[first_row])
            lib.consume(twin, tokens[first_row][0] if tokens[first_row] else tokenizer.eos_token_id)
            lib.fill(twin, twin_mask, 0)
            lib.fill(matchers[first_row], after_clone, 0)
            outcome = []
            for row in range(first_row, first_row + per_lib):
                text = tokenizer.decode([t for t in tokens[row] if t not in eos_ids], skip_special_tokens=True)
                error = errors[row] or (check(grammar, text) if finished[row] else None)
                outcome.append({"seed": seeds[row], "tokens": len(tokens[row]), "finished": finished[row],
                                "valid": finished[row] and error is None, "error": error, "text": text})
            times = timing[name]
            # The forward is shared: each library is charged its rows' part of it.
            mask_s, forward_part = sum(times["mask"]) + sum(times["apply"]), forward_s * per_lib / rows
            line = {
                "bench": "constrained", "library": name, "grammar": grammar, "model": label, "rows": per_lib,
                "compile_ms": setup[name][grammar], "matcher_new_us": matcher_us[name],
                "valid": sum(o["valid"] for o in outcome), "invalid": sum(o["error"] is not None for o in outcome),
                "truncated": sum(not o["finished"] and o["error"] is None for o in outcome),
                "row_steps": len(times["mask"]), "mask_us_mean": micros(statistics.mean(times["mask"])),
                "mask_us_p50": micros(statistics.median(times["mask"])), "mask_us_p99": micros(p99(times["mask"])),
                "fill_us_mean": micros(statistics.mean(times["fill"])),
                "apply_us_mean": micros(statistics.mean(times["apply"])),
                "consume_us_mean": micros(statistics.mean(times["consume"])),
                "first_fill_us": micros(statistics.mean(times["first"])),
                "prefill_ms": round(prefill_ms, 1), "loop_rows": rows,
                "forward_ms_per_step": round(statistics.mean(forward) * 1e3, 2) if forward else None,
                "forward_us_per_row_step": micros(forward_s / rows / len(forward)) if forward else None,
                "mask_share_of_step": round(mask_s / (mask_s + forward_part), 4),
                "reset_ok": bool(torch.equal(first_mask, after_reset)),
                "clone_ok": bool(torch.equal(first_mask, after_clone) and not torch.equal(first_mask, twin_mask)),
                "greedy": outcome[0]["text"], "greedy_valid": outcome[0]["valid"], "sampled": outcome[1:],
            }
            results[name][grammar] = line
            print(json.dumps(line), flush=True)

    if not libs:
        return
    summary = {"bench": "constrained", "summary": True, "model": label, "max_tokens": args.max_tokens,
               "rows_per_library_and_grammar": per_lib}
    # Correctness: no finished row may be invalid, no token refused; a truncated row is the model's doing.
    invalid = {name: sum(g["invalid"] for g in by.values()) for name, by in results.items()}
    summary["valid"] = {name: sum(g["valid"] for g in by.values()) for name, by in results.items()}
    summary["truncated"] = {name: sum(g["truncated"] for g in by.values()) for name, by in results.items()}
    summary["invalid"] = invalid
    summary["correctness_winner"] = [name for name, count in invalid.items() if count == min(invalid.values())]
    cost = {name: round(statistics.mean(g["mask_us_mean"] for g in by.values()), 1) for name, by in results.items()}
    tail = {name: round(max(g["mask_us_p99"] for g in by.values()), 1) for name, by in results.items()}
    schemas_ms = {name: round(statistics.mean(by[g]["compile_ms"] for g in by if g != "json_object"), 2)
                  for name, by in results.items()}
    summary.update({
        "mask_us_mean": cost, "mask_us_p99_max": tail, "schema_compile_ms_mean": schemas_ms,
        "per_token_winner": min(cost, key=cost.get), "compile_winner": min(schemas_ms, key=schemas_ms.get),
        # Whitespace aside (xgrammar's any-JSON allows ", "): the same masks give the same greedy text.
        "greedy_agree": {g: len({"".join(by[g]["greedy"].split()) for by in results.values()}) == 1
                         for g in grammars},
    })
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
