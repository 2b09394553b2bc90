"""Cluster metrics: what the live feed costs, and how late it reaches 200 dashboards, with 3, 10 and 30
processes publishing metrics; and the two ways to gather them, measured side by side.

    python bench/cluster.py                        # 3, 10 and 30 processes, 200 dashboards (about 4 minutes)
    python bench/cluster.py --quick                # 3 processes, 5 dashboards, 3 changes: checks that it runs
    python bench/cluster.py --processes 30 --dashboards 50

Feed: daphne and the live feed's producer (`manage.py run_live_feed`, a snapshot a second) against a
temporary database and the Redis at REDIS_URL, and one more process that stands for N Blaze processes:
N threads, each publishing, every second, a registry as a busy process has it (four engines, four
routes, ten endpoints, every histogram observed; `telemetry.cluster.publish` under a role of its own,
so Redis holds N processes). Then 200 dashboard WebSockets (bench/live_feed.py's client): a change is a
worker heartbeat with a new `in_flight`; its delay is from that write to each dashboard's first
snapshot showing it (the wait for the producer's next interval included). CPU: the producer's, per
interval, from /proc; it should grow no faster than linearly with N.

Mechanisms: in this process, the CPU time to gather the N processes' metrics once, as the feed does
each interval: `push` reads the N published snapshots from Redis and sums them (`feed.read_metrics`),
`scrape` GETs N Prometheus expositions over loopback HTTP (prometheus-client's own exporter, one per
process) and parses them with prometheus-client's parser. Median of 20 rounds.

Prints one JSON line per measurement, then a summary with the issue's target (p99 under 1.5 s at 30).
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.live_feed import INTERVAL, beat, cpu_seconds, measure, percentile, start_feed  # noqa: E402  (after the path)

ENGINES = [f"bench-engine-{i}" for i in range(4)]
ROUTES = [f"bench-route-{i}" for i in range(4)]


def busy_registry():
    """Fill this process's registry as a busy Blaze process's is (every series the feed reads, and more)."""
    import random

    from telemetry import metrics

    rng = random.Random(7)
    for engine in ENGINES:
        for _ in range(200):
            metrics.TIME_TO_FIRST_TOKEN.labels(engine).observe(rng.expovariate(5))
            metrics.INTER_TOKEN_LATENCY.labels(engine).observe(rng.expovariate(50))
            metrics.BATCH_SIZE.labels(engine).observe(rng.randint(1, 32))
            metrics.INFERENCE_LATENCY.labels(engine, "llm").observe(rng.expovariate(2))
            for priority in ("1", "4"):
                metrics.QUEUE_WAIT.labels(engine, priority).observe(rng.expovariate(20))
        metrics.TOKENS_GENERATED.labels(engine).inc(10_000)
        metrics.QUEUE_DEPTH.labels(engine).set(3)
    for route in ROUTES:
        for outcome in ("ok", "client_error", "server_error"):
            for _ in range(50):
                metrics.MODEL_REQUESTS.labels(route, outcome).observe(rng.expovariate(3))
    for index in range(10):
        for status in ("200", "400", "500"):
            metrics.HTTP_REQUESTS.labels(f"/bench/{index}/", "POST", status).inc(100)
            metrics.HTTP_LATENCY.labels(f"/bench/{index}/", "POST").observe(0.1)
    metrics.MODEL_CACHE_BYTES.labels("bench@host").set(1 << 30)


def publishers(count, stop):
    """Run as a child process: `count` publishing threads, each a Blaze process as Redis sees it."""
    from telemetry import cluster

    busy_registry()

    def run(index):
        while not stop.is_set():
            cluster.publish(f"bench-{index}")
            stop.wait(1.0)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
        time.sleep(1.0 / count)  # spread over the second, as independent processes would be
    return threads


def gather_costs(count, rounds=20):
    """CPU ms to gather `count` processes' metrics once: from Redis (push) and over HTTP (scrape)."""
    import logging

    import httpx
    from django.conf import settings
    from prometheus_client import REGISTRY, start_http_server
    from prometheus_client.parser import text_string_to_metric_families

    from dashboard.feed import read_metrics
    from telemetry import cluster

    settings.REDIS_PREFIX = f"{settings.REDIS_PREFIX}-gather-{count}"  # only these processes, none of the feed's
    busy_registry()
    for index in range(count):
        cluster.publish(f"gather-{index}")
    ports, servers = [], []
    for _ in range(count):
        from tests.servers import free_port

        port = free_port()
        servers.append(start_http_server(port, addr="127.0.0.1", registry=REGISTRY))
        ports.append(port)

    def push():
        snapshots = cluster.processes()
        assert len(snapshots) == count + 1, len(snapshots)  # and this process's own
        read_metrics(snapshots)

    def scrape(client):
        for port in ports:
            text = client.get(f"http://127.0.0.1:{port}/metrics").text
            for family in text_string_to_metric_families(text):
                list(family.samples)

    def cost(call):
        samples = []
        for _ in range(rounds):
            started = time.process_time()
            call()
            samples.append(1000 * (time.process_time() - started))
        return round(statistics.median(samples), 2)

    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per GET otherwise
    with httpx.Client() as client:
        result = {"push_cpu_ms": cost(push), "scrape_cpu_ms": cost(lambda: scrape(client))}
    for server in servers:
        server[0].shutdown()
    redis_bytes = len(json.dumps(cluster.snapshot("size")))
    return {**result, "snapshot_bytes": redis_bytes}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 processes, 5 dashboards, 3 changes")
    parser.add_argument("--processes", help="simulated process counts, comma-separated (default 3,10,30)")
    parser.add_argument("--dashboards", type=int, help="dashboards open at once (default 200)")
    parser.add_argument("--changes", type=int, help="heartbeat changes timed per count (default 20)")
    parser.add_argument("--_publish", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._publish:  # the child that stands for N processes: the parent's settings, from its environment
        import django

        django.setup()
        publishers(args._publish, threading.Event())
        sys.stdin.read()  # until the parent closes it
        return
    work = Path(tempfile.mkdtemp(prefix="blaze-cluster-bench-"))
    from bench.batching import ensure_redis, setup_django

    setup_django(work)
    ensure_redis()
    counts = [int(n) for n in (args.processes or ("3" if args.quick else "3,10,30")).split(",")]
    dashboards = args.dashboards or (5 if args.quick else 200)
    changes = args.changes or (3 if args.quick else 20)

    from engines.models import Engine
    from tests.servers import server_env

    for name in ENGINES:
        Engine.objects.get_or_create(name=name, defaults={"kind": "llm", "model": "/bench/none"})
    daphne, feed, url, cookie = start_feed(work)
    rows = []
    try:
        beat(0)
        for count in counts:
            child = subprocess.Popen([sys.executable, __file__, "--_publish", str(count)], stdin=subprocess.PIPE,
                                     env=server_env(DJANGO_SETTINGS_MODULE="blaze_site.settings"), cwd=ROOT)
            time.sleep(3)  # every simulated process has published, and the feed has read them
            feed_cpu, started = cpu_seconds(feed.popen.pid), time.time()
            delays, missed, _ = asyncio.run(measure(url, cookie, dashboards, changes))
            seconds = time.time() - started
            used = cpu_seconds(feed.popen.pid) - feed_cpu
            child.stdin.close()
            child.terminate()
            child.wait(timeout=30)
            row = {
                "bench": "cluster", "phase": "feed", "processes": count, "dashboards": dashboards,
                "changes": changes, "received": len(delays), "missed": missed,
                "delay_p50_s": round(percentile(delays, 0.5), 3), "delay_p99_s": round(percentile(delays, 0.99), 3),
                "feed_cpu_ms_per_interval": round(1000 * used / (seconds / INTERVAL), 2),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
            time.sleep(1.5)  # the simulated processes' keys lapse before the next count
        mechanisms = []
        for count in sorted({min(counts), max(counts)}):
            row = {"bench": "cluster", "phase": "gather", "processes": count, **gather_costs(count)}
            mechanisms.append(row)
            print(json.dumps(row), flush=True)
    finally:
        feed.stop()
        daphne.stop()
    largest = max(rows, key=lambda r: r["processes"])
    smallest = min(rows, key=lambda r: r["processes"])
    growth = (largest["feed_cpu_ms_per_interval"] / smallest["feed_cpu_ms_per_interval"]
              if smallest["feed_cpu_ms_per_interval"] else None)
    print(json.dumps({
        "bench": "cluster", "summary": True,
        "delay_p99_s": {r["processes"]: r["delay_p99_s"] for r in rows},
        "feed_cpu_ms_per_interval": {r["processes"]: r["feed_cpu_ms_per_interval"] for r in rows},
        "feed_cpu_growth": round(growth, 2) if growth else None,
        "process_ratio": largest["processes"] / smallest["processes"],
        "gather_cpu_ms": {m["processes"]: {"push": m["push_cpu_ms"], "scrape": m["scrape_cpu_ms"]} for m in mechanisms},
        "target_p99_under_1_5_s": largest["delay_p99_s"] < 1.5 if largest["processes"] >= 30 else None,
        "load_average": os.getloadavg()[0],
    }), flush=True)


if __name__ == "__main__":
    main()
