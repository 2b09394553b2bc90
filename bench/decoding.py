"""Raw decode loops on one model, no serving stack: why Blaze schedules over its own running batch.

    python bench/decoding.py                  # SmolLM2-135M-Instruct (the demo LLM), 16 prompts × 32 tokens, CPU
    python bench/decoding.py --quick          # the tiny random GPT-2: checks the bench runs
    python bench/decoding.py --llm-dir DIR --precision fp16 --prompts 64   # e.g. on a GPU machine

Three ways to decode the same prompts greedily, in this process, one after the other:
- `generate`: one left-padded `model.generate` for all prompts (what the dynamic batcher runs);
- `running_batch`: Blaze's `decoding.Decoder` (engines/worker/runtimes/decoding.py), all prompts
  joined at once and stepped until every row is done (what the continuous scheduler runs);
- `hf_continuous`: transformers' `generate_batch` (its ContinuousBatchingManager), default settings.
EOS is ignored unless `--eos` is given, so every way decodes --tokens tokens per prompt, the same work;
with `--eos` rows end at EOS as they do when served. Each is run once to warm up, then timed
`--repeats` times; tokens/s counts the tokens each way decoded, row by row (a row that ended early
counts what it produced, not --tokens). Prints one JSON line per way, then a summary line.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.batching import llm_model, prompts  # noqa: E402


class _Item:
    def __init__(self, request):
        self.request = request

    def emit(self, event):
        pass


def decode_all(decoder, requests):
    """Join every request to `decoder` at once and step until every row is done, as the continuous
    scheduler would with nothing else arriving: (decode steps, every row's result)."""
    finished = decoder.join([_Item(request) for request in requests])[1]
    results, steps = list(finished.values()), 0
    decoder.keep([row for row in range(decoder.size) if row not in finished])
    while decoder.size:
        finished = decoder.step()
        steps += 1
        results += finished.values()
        decoder.keep([row for row in range(decoder.size) if row not in finished])
    return steps, results


def tokens_generated(new_ids, eos_ids):
    """The tokens a padded `generate` decoded, summed over its rows (`new_ids`: the generated part):
    each row's up to its first EOS, after which `generate` only pads it."""
    return sum(next((at for at, token in enumerate(row) if token in eos_ids), len(row)) for row in new_ids.tolist())


def completion_tokens(results):
    """The tokens the rows of a running batch decoded (their results, from `decode_all`), summed."""
    return sum(result["completion_tokens"] for result in results)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--llm-dir")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-hf", action="store_true", help="leave out transformers' generate_batch")
    parser.add_argument("--eos", action="store_true", help="rows end at EOS (default: every row runs --tokens)")
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "blaze_site.settings")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import django

    django.setup()
    import torch
    from transformers import GenerationConfig

    from engines.contract import EngineSpec
    from engines.worker.host import detect_device
    from engines.worker.runtimes.llm import LlmRuntime

    device = detect_device()[0]
    llm_dir, label = llm_model(args.llm_dir, args.quick, tempfile.mkdtemp())
    runtime = LlmRuntime(EngineSpec(name="bench", kind="llm", model=str(llm_dir),
                                    config={"precision": args.precision, "max_new_tokens": args.tokens}), device)
    runtime.load()
    eos = runtime.eos_ids() if args.eos else set()
    if not args.eos:  # EOS never ends a row: every way generates --tokens tokens per prompt, the same work
        runtime.eos_ids = lambda: set()
    model, tokenizer = runtime.model, runtime.tokenizer
    requests = [{"prompt": None, "messages": [{"role": "user", "content": text}], "max_tokens": args.tokens,
                 "temperature": 0.0, "top_p": 1.0, "stop": [], "seed": 0} for text in prompts(args.prompts)]
    ids = [runtime.prompt_ids(request) for request in requests]

    # Where each way's rows end: at EOS, or (EOS held back) at --tokens.
    until = {"eos_token_id": sorted(eos)} if args.eos else {"min_new_tokens": args.tokens}
    hf_until = until if args.eos else {"min_new_tokens": args.tokens, "eos_token_id": -1}

    def generate():
        batch = tokenizer.pad({"input_ids": ids}, return_tensors="pt").to(model.device)
        with torch.inference_mode():
            out = model.generate(**batch, max_new_tokens=args.tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, **until)
        return tokens_generated(out[:, batch["input_ids"].shape[1]:], eos)

    def running_batch():
        return completion_tokens(decode_all(runtime.decoder(), requests)[1])

    def hf_continuous():
        config = GenerationConfig(max_new_tokens=args.tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                                  **hf_until)
        outputs = model.generate_batch(inputs=ids, generation_config=config, progress_bar=False)
        return sum(len([token for token in output.generated_tokens if token not in eos])
                   for output in outputs.values())

    ways = {"generate": generate, "running_batch": running_batch}
    if not args.skip_hf:
        ways["hf_continuous"] = hf_continuous
    figures = {}
    for name, run in ways.items():
        try:
            run()  # warm-up
            rates, counts = [], []
            for _ in range(args.repeats):
                started = time.perf_counter()
                tokens = run()
                rates.append(tokens / (time.perf_counter() - started))
                counts.append(tokens)
        except Exception as exc:  # noqa: BLE001 - a way that cannot run here is reported, not fatal
            print(json.dumps({"bench": "decoding", "way": name, "error": f"{type(exc).__name__}: {exc}"}))
            continue
        figures[name] = statistics.median(rates)
        print(json.dumps({"bench": "decoding", "way": name, "model": label, "device": device,
                          "precision": args.precision, "prompts": args.prompts, "tokens": args.tokens,
                          "eos": args.eos, "tokens_decoded": counts, "tok_s_median": round(figures[name], 1),
                          "tok_s_runs": [round(r, 1) for r in rates]}))
    base = figures.get("generate")
    print(json.dumps({"bench": "decoding", "summary": True, "model": label, "device": device,
                      **{f"{name}_vs_generate": round(rate / base, 3) for name, rate in figures.items() if base}}))


if __name__ == "__main__":
    main()
