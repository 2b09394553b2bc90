"""Continuous vs dynamic batching of an LLM under open-loop Poisson traffic, in the same run.

    python bench/scheduler.py                # SmolLM2-135M-Instruct (the demo LLM), CPU, 0.5 and 1.0 req/s
    python bench/scheduler.py --quick        # the tiny random GPT-2, a few seconds: checks the bench runs
    python bench/scheduler.py --llm-dir DIR --precision fp16 --rates 4,8   # any local model (e.g. on a GPU)

Two engines on the same model directory, one per LLM `scheduler` (engine config): "dynamic" (one
`generate` per batch; a newcomer waits for the whole batch to finish) and "continuous" (newcomers
join the running batch at every decode step, finished rows leave at once). Both are served over
HTTP (daphne → Celery worker → scheduler → model) and measured one after the other, per rate, with
the identical arrival schedule: exponential inter-arrival times from a seeded RNG for `--seconds`,
each request sent at its arrival time whatever the others are doing (open loop), a streamed chat
completion with `max_tokens` drawn uniformly from --min-tokens..--max-tokens, greedy (temperature
0, so both schedulers generate the same text for a prompt), every prompt distinct, every stream
read to its end.

Prints one JSON line per (scheduler, rate): requests, completed, errors, duration (first send to
last finish), throughput (completion tokens / duration), p50/p99 of time to first token (send →
first content delta), of end to end and of queue time (the request log's `queue_seconds`, read from
Redis by id: the wait in the broker plus the wait in the worker for a batch slot), and total tokens.
Then one summary line: per rate dynamic/continuous TTFT p99 (target ≥ 5) and continuous/dynamic throughput (target ≥ 1).
"""

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from bench.batching import ensure_redis, llm_model, prompts, setup_django  # noqa: E402  (after the path)
from bench.load import percentile  # noqa: E402

SCHEDULERS = ("dynamic", "continuous")
TARGETS = {"ttft_p99_ratio": 5.0, "throughput_ratio": 1.0}


def schedule(rate, seconds, min_tokens, max_tokens, seed, first_prompt):
    """[(offset seconds, max_tokens, prompt)]: Poisson arrivals at `rate` per second for `seconds`."""
    rng, arrivals, at = random.Random(seed), [], 0.0
    while True:
        at += rng.expovariate(rate)
        if at >= seconds:
            break
        arrivals.append((at, rng.randint(min_tokens, max_tokens)))
    texts = prompts(first_prompt + len(arrivals))[first_prompt:]
    return [(at, tokens, text) for (at, tokens), text in zip(arrivals, texts)]


async def stream_chat(client, model, text, max_tokens, request_id):
    """One streamed chat completion read to its end: (first content delta, finished) perf_counter
    times, completion tokens, error or None."""
    body = {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    first, tokens, error = None, None, None
    try:
        async with client.post("/v1/chat/completions", json=body, headers={"X-Request-ID": request_id}) as response:
            if response.status >= 400:
                error = f"HTTP {response.status}"
                await response.read()
            async for line in response.content:  # server-sent events, one `data:` line each
                line = line.strip()
                if not line.startswith(b"data: ") or error:
                    continue
                if line == b"data: [DONE]":
                    break
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    error = chunk["error"].get("type") or "error"
                elif chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
                elif first is None and any(c["delta"].get("content") for c in chunk["choices"]):
                    first = time.perf_counter()
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        error = type(exc).__name__
    if error is None and tokens is None:
        error = "no usage"
    return first, time.perf_counter(), tokens, error


async def open_loop(base_url, key, model, arrivals, label):
    """Send every request at its arrival time, each in its own task; returns each one's times and tokens."""
    async with aiohttp.ClientSession(
        base_url, headers={"Authorization": f"Bearer {key}"}, timeout=aiohttp.ClientTimeout(total=1800),
        connector=aiohttp.TCPConnector(limit=0),  # open loop: no client-side queue for a connection
    ) as client:
        start = time.perf_counter() + 0.05

        async def one(index, at, max_tokens, text):
            await asyncio.sleep(max(0.0, start + at - time.perf_counter()))
            sent = time.perf_counter()
            request_id = f"{label}-{index}"
            first, finished, tokens, error = await stream_chat(client, model, text, max_tokens, request_id)
            return {"id": request_id, "sent": sent, "first": first, "finished": finished, "tokens": tokens,
                    "error": error}

        results = await asyncio.gather(*(one(i, *arrival) for i, arrival in enumerate(arrivals)))
    return results


def queue_seconds(engine, ids):
    """The request log's queue time of each request id that has one (entries flush every 0.2 s)."""
    from django.conf import settings

    from telemetry import request_log

    time.sleep(1.0)
    logged = {e["id"]: e.get("queue_seconds") for e in request_log.entries(
        engine=engine, limit=settings.BLAZE_REQUEST_LOG_SIZE)}
    return [logged[i] for i in ids if logged.get(i) is not None]


def measure(base_url, key, scheduler, rate, arrivals, label, model_label, device):
    engine = f"bench-{scheduler}"
    results = asyncio.run(open_loop(base_url, key, engine, arrivals, label))
    done = [r for r in results if r["error"] is None]
    duration = max(r["finished"] for r in results) - min(r["sent"] for r in results) if results else 0.0
    tokens = sum(r["tokens"] for r in done)
    ttft = [r["first"] - r["sent"] for r in done if r["first"] is not None]
    e2e = [r["finished"] - r["sent"] for r in done]
    queue = queue_seconds(engine, [r["id"] for r in results])
    errors = {}
    for r in results:
        if r["error"] is not None:
            errors[r["error"]] = errors.get(r["error"], 0) + 1
    line = {
        "bench": "scheduler", "model": model_label, "device": device, "scheduler": scheduler, "rate": rate,
        "requests": len(results), "completed": len(done), "errors": sum(errors.values()), "error_kinds": errors,
        "duration_s": round(duration, 3), "throughput_tok_s": round(tokens / duration, 2) if duration else None,
        "ttft_p50_s": percentile(ttft, 0.50), "ttft_p99_s": percentile(ttft, 0.99),
        "e2e_p50_s": percentile(e2e, 0.50), "e2e_p99_s": percentile(e2e, 0.99),
        "queue_p50_s": percentile(queue, 0.50), "queue_p99_s": percentile(queue, 0.99), "tokens": tokens,
    }
    print(json.dumps(line), flush=True)
    return line


def ratio(numerator, denominator):
    return round(numerator / denominator, 3) if numerator is not None and denominator else None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="tiny random GPT-2, a few seconds of arrivals: checks the bench, measures nothing real")
    parser.add_argument("--llm-dir", help="a local causal LM directory (default: the demo SmolLM2)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--rates", help="requests per second, comma-separated (default 0.5,1.0; --quick: 2,4)")
    parser.add_argument("--seconds", type=float, help="seconds of arrivals per measurement (default 60; --quick: 4)")
    parser.add_argument("--min-tokens", type=int, help="smallest max_tokens drawn (default 16; --quick: 4)")
    parser.add_argument("--max-tokens", type=int, help="largest max_tokens drawn (default 256; --quick: 24)")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    quick = args.quick
    rates = [float(r) for r in (args.rates or ("2,4" if quick else "0.5,1.0")).split(",")]
    seconds = args.seconds or (4 if quick else 60)
    min_tokens = args.min_tokens or (4 if quick else 16)
    max_tokens = args.max_tokens or (24 if quick else 256)

    work_dir = Path(tempfile.mkdtemp(prefix="blaze-scheduler-"))
    os.environ.setdefault("BLAZE_REQUEST_LOG_SIZE", "100000")  # every measured request stays readable
    setup_django(work_dir)
    ensure_redis()
    from accounts import services
    from accounts.audit import Actor
    from engines.models import Engine
    from engines.worker.host import detect_device
    from tests.conftest import make_user
    from tests.servers import start_daphne, start_worker

    device = detect_device()[0]
    llm_dir, label = llm_model(args.llm_dir, quick, work_dir)
    for scheduler in SCHEDULERS:
        Engine.objects.create(name=f"bench-{scheduler}", kind="llm", model=str(llm_dir), config={
            "scheduler": scheduler, "precision": args.precision, "max_batch_size": args.max_batch_size,
            "max_new_tokens": max(256, max_tokens)})
    user = make_user("bench", "viewer")
    _, key = services.api_key_create(actor=Actor.system("bench"), user=user, name="bench", scopes=["inference"])

    # A thread per request in flight: an overloaded scheduler's backlog must reach it, not Celery's queue.
    worker = start_worker(work_dir, "bench", threads=min(512, int(max(rates) * seconds) + 16))
    web = start_daphne(work_dir)
    lines, first_prompt = {}, 0
    try:
        for scheduler in SCHEDULERS:  # loads and warms each model: two short streams, not measured
            asyncio.run(open_loop(web.url, key, f"bench-{scheduler}",
                                  [(0.0, 4, f"warm up {i}") for i in range(2)], f"warm-{scheduler}"))
        for index, rate in enumerate(rates):
            arrivals = schedule(rate, seconds, min_tokens, max_tokens, args.seed * 1000 + index, first_prompt)
            first_prompt += len(arrivals)
            for scheduler in SCHEDULERS:  # the identical schedule, one scheduler after the other
                lines[scheduler, rate] = measure(web.url, key, scheduler, rate, arrivals,
                                                 f"{scheduler}-{rate}", label, device)
    finally:
        web.stop()
        worker.stop()
    ratios = {
        "ttft_p99_ratio": {str(r): ratio(lines["dynamic", r]["ttft_p99_s"], lines["continuous", r]["ttft_p99_s"])
                           for r in rates},
        "throughput_ratio": {str(r): ratio(lines["continuous", r]["throughput_tok_s"],
                                           lines["dynamic", r]["throughput_tok_s"]) for r in rates},
    }
    print(json.dumps({
        "bench": "scheduler", "summary": True, "model": label, "device": device, "seconds": seconds,
        "max_tokens": [min_tokens, max_tokens], "max_batch_size": args.max_batch_size, "seed": args.seed,
        **ratios, "targets": TARGETS,
        "targets_met": all(v is not None and v >= TARGETS[name] for name, per in ratios.items() for v in per.values()),
    }), flush=True)


if __name__ == "__main__":
    main()
