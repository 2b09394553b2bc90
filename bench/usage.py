"""What usage recording and budgets cost a request, and how fast usage reads over a million records.

    python bench/usage.py                 # both parts (a few minutes on 2 cores)
    python bench/usage.py --quick         # 200 requests and 20,000 records: checks the bench runs
    python bench/usage.py --records 1000000 --skip-latency

Latency: non-streaming `POST /v1/chat/completions` through a route to bench/router.py's loopback
upstream (a process of its own), from 1 and from 32 concurrent clients, on two daphnes in the same
alternating rounds: one with usage off (BLAZE_USAGE_ENABLED=0: no usage event, no budget), one with
it on and the key under a budget (an event per request, a reservation per request). Prints each
one's p50/p99 and requests/s and what usage adds (targets: ≤ 0.3 ms p50 at 1 client, ≤ 5% of the
requests/s at 32).

Reads: --records usage records spread over 30 days, 50 users, 200 keys, 20 teams, 10 engines and 4
kinds, stored the way the live feed's process stores them (records and hourly and daily rollups,
usage/persist.py), then `GET /api/usage/` (30 days per day, by engine and by user) and the Usage page,
each timed --reads times (target: a 30-day chart under 300 ms). On PostgreSQL when one answers on
127.0.0.1:5432 (a database of its own, dropped after), else SQLite.
"""

import argparse
import asyncio
import contextlib
import datetime
import json
import multiprocessing
import os
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.router import latencies, percentile, route_to, serve_upstream  # noqa: E402

DATABASE = f"blaze_bench_usage_{os.getpid()}"


def setup(work_dir):
    """Django on PostgreSQL (a fresh database) when it answers, else SQLite; returns the URL used."""
    url = f"sqlite:///{work_dir / 'bench.sqlite3'}"
    try:
        import psycopg

        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True,
                             connect_timeout=2) as admin:
            admin.execute(f'CREATE DATABASE "{DATABASE}"')
        url = f"postgres://postgres@127.0.0.1:5432/{DATABASE}"
    except Exception:  # noqa: BLE001 - no PostgreSQL here: SQLite, said in the output
        pass
    # The models directory stays the project's (var/models): what was built or exported there once (the
    # demo embedder's ONNX export, a minute on 2 cores) is not done again for every run.
    os.environ.update({"DJANGO_SETTINGS_MODULE": "blaze_site.settings", "BLAZE_VAR_DIR": str(work_dir),
                       "DATABASE_URL": url, "BLAZE_REDIS_PREFIX": f"bench-{uuid.uuid4().hex[:8]}",
                       "BLAZE_MODELS_DIR": os.environ.get("BLAZE_MODELS_DIR", str(ROOT / "var" / "models"))})
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return url


def drop_database(url):
    if not url.startswith("postgres"):
        return
    from django.db import connections

    connections.close_all()
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')


async def rounds(urls, key, requests, concurrency, rounds_count=3):
    """{name: [seconds per request]} over `rounds_count` rounds that alternate the daphnes."""
    import aiohttp

    spent = {name: [] for name in urls}
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        def sender(url):
            async def send():
                async with session.post(f"{url}/v1/chat/completions", json={
                        "model": "bench", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}) as reply:
                    reply.raise_for_status()
                    await reply.read()
            return send

        for url in urls.values():  # warm-up
            await latencies(sender(url), concurrency, max(concurrency * 4, 50))
        for _ in range(rounds_count):
            for name, url in urls.items():
                started = time.perf_counter()
                taken = await latencies(sender(url), concurrency, requests // rounds_count)
                spent[name].append((taken, time.perf_counter() - started))
    return spent


def latency(work_dir, requests, cleanup):
    from accounts.models import ApiKey
    from tests.servers import free_port, start_daphne
    from usage import budgets
    from usage.models import Budget

    spawn = multiprocessing.get_context("spawn")
    port, ready = free_port(), spawn.Event()
    upstream = spawn.Process(target=serve_upstream, args=(port, ready), daemon=True)
    upstream.start()
    cleanup.callback(upstream.terminate)
    key = route_to(f"http://127.0.0.1:{port}/v1")
    api_key = ApiKey.objects.get(key_hash=ApiKey.hash(key))
    budget = Budget.objects.create(name="bench", scope="key", target_id=api_key.pk, metric="requests",
                                   period="total", limit=10**9)
    off = start_daphne(work_dir, BLAZE_USAGE_ENABLED="0")
    cleanup.callback(off.stop)
    on = start_daphne(work_dir, BLAZE_USAGE_ENABLED="1")
    cleanup.callback(on.stop)
    if not ready.wait(30):
        sys.exit("The upstream did not start listening within 30 s.")
    results = {}
    for concurrency in (1, 32):
        spent = asyncio.run(rounds({"off": off.url, "on": on.url}, key, requests, concurrency))
        for name, parts in spent.items():
            seconds = [s for taken, _ in parts for s in taken]
            wall = sum(elapsed for _, elapsed in parts)
            row = {"bench": "usage", "measure": "latency", "usage": name, "concurrency": concurrency,
                   "requests": len(seconds), "p50_ms": round(percentile(seconds, 0.5) * 1000, 3),
                   "p99_ms": round(percentile(seconds, 0.99) * 1000, 3), "req_s": round(len(seconds) / wall, 1)}
            results[(name, concurrency)] = row
            print(json.dumps(row), flush=True)
    standing = budgets.standing([budget])[budget.pk]
    return {
        # What the budget counted: the "on" daphne's requests (held until stored; no feed runs here).
        "budget_counted": int(standing.spent + standing.reserved),
        "on_requests": sum(results[("on", concurrency)]["requests"] for concurrency in (1, 32)),
        "added_p50_ms_1_client": round(results[("on", 1)]["p50_ms"] - results[("off", 1)]["p50_ms"], 3),
        "throughput_kept_32_clients": round(results[("on", 32)]["req_s"] / results[("off", 32)]["req_s"], 3),
    }


def load_records(count, batch=20_000):
    """`count` records over the last 30 days, stored with their rollups as usage/persist.py stores them."""
    from django.db import transaction

    from usage import persist
    from usage.models import UsageRecord

    rng = random.Random(7)
    now = time.time()
    engines = [f"engine-{i}" for i in range(10)]
    kinds = ["chat", "completion", "embedding", "image"]
    started = time.perf_counter()
    for offset in range(0, count, batch):
        records = []
        for i in range(offset, min(offset + batch, count)):
            user = rng.randrange(1, 51)
            records.append(UsageRecord(
                event=f"bench-{i}", at=datetime.datetime.fromtimestamp(now - rng.random() * 30 * 86400, datetime.UTC),
                user_id=user, api_key_id=user * 4 + rng.randrange(4), team_id=user % 20 + 1, source="v1",
                kind=rng.choice(kinds), route="", engine=rng.choice(engines), prompt_tokens=rng.randrange(2000),
                completion_tokens=rng.randrange(500), worker_seconds=rng.random(), currency="USD"))
        with transaction.atomic():
            UsageRecord.objects.bulk_create(records, batch_size=5000)
            persist._add_to_rollups(records)
    return round(time.perf_counter() - started, 1)


def reads(reads_count):
    from django.test import Client

    from tests.conftest import make_user

    client = Client(HTTP_HOST="localhost")  # one of ALLOWED_HOSTS
    client.force_login(make_user("bench-admin", "admin"))
    out = {}
    for name, url in (("api_by_engine_30_days", "/api/usage/?period=day&group_by=engine"),
                      ("api_by_user_30_days", "/api/usage/?period=day&group_by=user"),
                      ("page_by_engine_30_days", "/usage/?period=day&group_by=engine&days=30")):
        seconds = []
        for _ in range(reads_count):
            started = time.perf_counter()
            response = client.get(url)
            seconds.append(time.perf_counter() - started)
            assert response.status_code == 200, response.content[:300]
        out[name] = {"p50_ms": round(percentile(seconds, 0.5) * 1000, 1),
                     "max_ms": round(max(seconds) * 1000, 1)}
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="200 requests and 20,000 records")
    parser.add_argument("--requests", type=int, help="requests per daphne and concurrency (default 1500)")
    parser.add_argument("--records", type=int, help="usage records to read over (default 1,000,000)")
    parser.add_argument("--reads", type=int, default=10, help="times each read is timed (default 10)")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-reads", action="store_true")
    args = parser.parse_args()
    requests = args.requests or (200 if args.quick else 1500)
    records = args.records or (20_000 if args.quick else 1_000_000)

    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)
    from bench.batching import ensure_redis

    work_dir = Path(tempfile.mkdtemp(prefix="blaze-bench-usage-"))
    url = setup(work_dir)
    ensure_redis()
    summary = {"bench": "usage", "measure": "summary", "database": url.split(":")[0]}
    with contextlib.ExitStack() as cleanup:
        from bench.router import forget_redis_keys

        cleanup.callback(drop_database, url)
        cleanup.callback(forget_redis_keys)
        if not args.skip_latency:
            summary.update(latency(work_dir, requests, cleanup))
        if not args.skip_reads:
            summary["records"], summary["load_seconds"] = records, load_records(records)
            summary["reads"] = reads(args.reads)
        print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
