"""What constrained decoding costs per token in Blaze's running batch, with free rows beside it.

    python bench/constrained_batch.py          # SmolLM2-135M-Instruct (the demo LLM), 16 rows, CPU
    python bench/constrained_batch.py --quick  # the tiny random GPT-2: checks the bench runs

The same 16 chat prompts decode in one `decoding.Decoder` batch (what the continuous scheduler runs),
greedy, each row up to --tokens tokens, twice: all rows free, then half of them held to a JSON schema
(`response_format: json_schema`, through llguidance, as /v1 asks it). Timed apart: the model's forward
per step, and the grammar's work per constrained token (`grammar.Constraint.mask` and `consume`: the
allowed tokens computed and applied, the matcher fed). Prints per run: steps, tokens, tokens/s, forward
ms per step, grammar µs per constrained token; then a summary with that cost's share of a step.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.batching import llm_model, prompts  # noqa: E402
from bench.decoding import completion_tokens, decode_all  # noqa: E402

SCHEMA = {"type": "object", "properties": {
    "topic": {"type": "string", "maxLength": 24}, "mood": {"enum": ["calm", "bright", "dark"]},
    "facts": {"type": "array", "maxItems": 3, "items": {"type": "string", "maxLength": 24}}},
    "required": ["topic", "mood", "facts"], "additionalProperties": False}


def run(runtime, decoding, requests):
    """Decode the requests in one batch: (seconds, steps, tokens generated, seconds in the forward)."""
    forward, step = [0.0], decoding.RunningBatch.step

    def timed_step(self, tokens):
        started = time.perf_counter()
        logits = step(self, tokens)
        forward[0] += time.perf_counter() - started
        return logits

    decoding.RunningBatch.step = timed_step
    try:
        decoder = runtime.decoder()
        started = time.perf_counter()
        steps, results = decode_all(decoder, requests)
        tokens = completion_tokens(results)
        return time.perf_counter() - started, steps, tokens, forward[0]
    finally:
        decoding.RunningBatch.step = step


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--llm-dir")
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=48)
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "blaze_site.settings")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import django

    django.setup()
    from engines.contract import EngineSpec
    from engines.worker.runtimes import decoding, grammar
    from engines.worker.runtimes.llm import LlmRuntime

    llm_dir, label = llm_model(args.llm_dir, args.quick, tempfile.mkdtemp(), positions=1024)
    runtime = LlmRuntime(EngineSpec(name="bench", kind="llm", model=str(llm_dir),
                                    config={"max_new_tokens": args.tokens}), "cpu")
    runtime.load()

    mask_time = [0.0, 0]  # seconds in Constraint.mask + consume, calls
    mask, consume = grammar.Constraint.mask, grammar.Constraint.consume

    def timed(method):
        def wrapper(self, *arguments):
            started = time.perf_counter()
            method(self, *arguments)
            mask_time[0] += time.perf_counter() - started
            mask_time[1] += method is mask
        return wrapper

    grammar.Constraint.mask, grammar.Constraint.consume = timed(mask), timed(consume)

    def requests(constrained):
        return [{"prompt": None, "max_tokens": args.tokens, "temperature": 0.0, "top_p": 1.0, "stop": [], "seed": 0,
                 "messages": [{"role": "user", "content": f"{text} Answer as JSON."}],
                 "grammar": {"json_schema": SCHEMA} if index < constrained else None}
                for index, text in enumerate(prompts(args.rows))]

    run(runtime, decoding, requests(0))  # warm-up
    figures = {}
    for name, constrained in (("free", 0), ("half_constrained", args.rows // 2)):
        mask_time[:] = [0.0, 0]
        seconds, steps, tokens, forward = run(runtime, decoding, requests(constrained))
        figures[name] = {"steps": steps, "tokens": tokens, "seconds": seconds, "forward": forward,
                         "mask": mask_time[0], "masked_tokens": mask_time[1]}
        print(json.dumps({
            "bench": "constrained_batch", "run": name, "model": label, "rows": args.rows,
            "constrained_rows": constrained, "steps": steps, "tokens": tokens,
            "tok_s": round(tokens / seconds, 1), "forward_ms_per_step": round(forward / max(steps, 1) * 1000, 2),
            "grammar_us_per_constrained_token": round(mask_time[0] / mask_time[1] * 1e6, 1) if mask_time[1] else None,
        }))
    half = figures["half_constrained"]
    per_token = half["mask"] / half["masked_tokens"] if half["masked_tokens"] else 0.0
    step = half["forward"] / max(half["steps"], 1)
    print(json.dumps({"bench": "constrained_batch", "summary": True, "model": label,
                      "grammar_us_per_constrained_token": round(per_token * 1e6, 1),
                      "share_of_a_step_per_constrained_row": round(per_token / step, 4) if step else None,
                      "tok_s_free": round(figures["free"]["tokens"] / figures["free"]["seconds"], 1),
                      "tok_s_half_constrained": round(half["tokens"] / half["seconds"], 1)}))


if __name__ == "__main__":
    main()
