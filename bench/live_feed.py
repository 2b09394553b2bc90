"""How fast the live feed reaches open dashboards, and what it costs, at 1, 50 and 200 clients.

    python bench/live_feed.py                    # 1, 50 and 200 clients, 20 changes each (about 2 minutes)
    python bench/live_feed.py --clients 1,10 --changes 5    # a quick check that it runs

Starts daphne and the live feed's producer (`manage.py run_live_feed`, one snapshot a second) against a
temporary database and the Redis at REDIS_URL, then opens N dashboard WebSockets (/ws/dashboard/, signed
in as a viewer) from one asyncio process. A change: this process writes a worker heartbeat with a new
`in_flight` number; the delay is from that write to each client's first snapshot that shows it, so it
includes the wait for the producer's next interval (up to one) and the fan-out. CPU: daphne's and the
producer's, from /proc, over the measured changes; the producer's is given per interval, which should
not grow with the number of clients (it publishes once, whatever their number).

Prints one JSON line per client count.
"""

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

INTERVAL = 1.0
WORKER = "bench-feed@bench"


def cpu_seconds(pid):
    """User + system CPU seconds of a process and its threads, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def beat(in_flight):
    """A heartbeat of a (pretend) worker: the snapshot's `workers` shows its in_flight."""
    from core import shared_state

    redis = shared_state.client()
    redis.set(shared_state.worker_key(WORKER), json.dumps({
        "id": WORKER, "device": "cpu", "in_flight": in_flight, "total_bytes": 1, "free_bytes": 1,
        "cache_used_bytes": 0, "cache_budget_bytes": 1, "cache": [], "last_seen": time.time() + 3600,
    }), ex=3600)
    redis.sadd(shared_state.workers_key(), WORKER)


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else None


async def measure(url, cookie, clients, changes):
    import aiohttp

    seen = {}  # (client, change) -> when it first saw it
    first = asyncio.Event()

    async def client(index, session):
        async with session.ws_connect(url, headers={"Cookie": cookie, "Origin": "http://localhost"}) as socket:
            async for message in socket:
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                now = time.time()
                for worker in json.loads(message.data)["workers"]:
                    if worker["id"] == WORKER:
                        seen.setdefault((index, worker["in_flight"]), now)
                        first.set()

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = [asyncio.create_task(client(index, session)) for index in range(clients)]
        await asyncio.wait_for(first.wait(), 30)
        await asyncio.sleep(2)
        changed_at = {}
        for change in range(1, changes + 1):
            changed_at[change] = time.time()
            await asyncio.to_thread(beat, change)
            await asyncio.sleep(INTERVAL * 1.37)  # not in step with the producer's interval
        await asyncio.sleep(INTERVAL * 2)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    delays = [seen[(index, change)] - changed_at[change] for index in range(clients) for change in changed_at
              if (index, change) in seen]
    missed = clients * changes - len(delays)
    return delays, missed, changed_at


def start_feed(work):
    """daphne and the live feed's producer, after Django is set up: (daphne, producer, the dashboard
    socket's URL, a signed-in viewer's session cookie)."""
    from django.test import Client

    from tests.conftest import make_user
    from tests.servers import start_daphne, start_live_feed

    client = Client()
    client.force_login(make_user("bench-viewer", "viewer"))
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    daphne = start_daphne(work)
    feed = start_live_feed(work, interval=INTERVAL)
    return daphne, feed, daphne.url.replace("http://", "ws://") + "/ws/dashboard/", cookie


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="1,50,200")
    parser.add_argument("--changes", type=int, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="blaze-feed-bench-"))

    from bench.batching import ensure_redis, setup_django

    setup_django(work)
    ensure_redis()
    daphne, feed, url, cookie = start_feed(work)
    try:
        beat(0)
        for clients in [int(n) for n in args.clients.split(",")]:
            web_cpu, feed_cpu, started = cpu_seconds(daphne.popen.pid), cpu_seconds(feed.popen.pid), time.time()
            delays, missed, _ = asyncio.run(measure(url, cookie, clients, args.changes))
            seconds = time.time() - started
            web_used, feed_used = cpu_seconds(daphne.popen.pid) - web_cpu, cpu_seconds(feed.popen.pid) - feed_cpu
            print(json.dumps({
                "bench": "live_feed", "clients": clients, "changes": args.changes, "interval_s": INTERVAL,
                "received": len(delays), "missed": missed,
                "delay_p50_s": round(percentile(delays, 0.5), 3), "delay_p99_s": round(percentile(delays, 0.99), 3),
                "daphne_cpu_percent": round(100 * web_used / seconds, 1),
                "producer_cpu_ms_per_interval": round(1000 * feed_used / (seconds / INTERVAL), 2),
            }), flush=True)
    finally:
        feed.stop()
        daphne.stop()


if __name__ == "__main__":
    main()
