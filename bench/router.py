"""What the router costs: µs per pick for each strategy, and the latency Blaze adds in front of an upstream.

    .venv/bin/pip install -r requirements-bench.txt    # litellm, the comparison (its proxy: see that file)
    python bench/router.py                             # the full run (about 3 minutes on 2 cores)
    python bench/router.py --quick                     # fewer picks and requests: checks the bench runs
    python bench/router.py --requests 3000             # more requests per path and concurrency
    python bench/router.py --tracing                   # what tracing costs: Blaze traced against untraced
    python bench/router.py --tracing --trace-ratio 0.1 # ... with a tenth of the requests traced

Pick cost, per strategy with 2 and 32 remote targets (no worker needed):
- pick_us: `engines.serving.router.alease_target(route, client_key=…)`, the pick the serving path
  makes, on one event loop and its Redis client, on a route fetched with its targets and engines:
  every target's breaker, health and numbers read from Redis, the strategy, then the lease taken and
  the breaker asked (each lease is given back, untimed, after its pick).
- strategy_us: `strategies.pick` alone on in-memory candidates. Round robin's turn counter, ip_hash's
  sticky mapping and the least_* strategies' tie-break are still one Redis round trip each: that is the
  strategy's own state, shared across processes; the other strategies are pure Python.
Each figure is --picks picks, or fewer when --pick-seconds run out first ("picks" says how many).

Proxy overhead: non-streaming `POST /v1/chat/completions` with a small body to a fast loopback
OpenAI-compatible upstream (an asyncio HTTP/1.1 server in its own process), four ways: the upstream
directly; through Blaze (daphne in its own process, model = a route whose only target is a remote
engine on that upstream); through litellm's Router in this process (no HTTP hop of its own); and
through litellm's proxy server (uvicorn in its own process, one worker, no database: a proxy like
Blaze). Each path has one keep-alive aiohttp session (litellm's Router its own, which by default
also sends through aiohttp: the same client on every path, so that added latency is the router's and
not the difference between two HTTP clients), is warmed up, then sends --requests requests from 1
and from 32 concurrent clients, in three rounds that alternate the paths. Before the rounds this
process collects and freezes its heap (settle_garbage_collector), and after each round it waits for
the logging litellm's Router does after answering (litellm_logged), so that neither lands in another
path's round. added_*_ms = the path's percentile minus the direct one's. Blaze and the litellm proxy
run with their default settings, except that the proxy's access log is off (daphne writes its access
log line per request, as `./blaze up` runs it: the comparison favours the proxy).

Prints one JSON line per measurement, then a summary line: did Blaze add less latency than litellm.

--tracing: the same rounds with Blaze twice instead of the peers, untraced (the default: no
OTEL_EXPORTER_OTLP_ENDPOINT) and traced (a second daphne exporting every span over OTLP/HTTP to a
loopback collector in its own process, tests/otlp.py, which decodes them as a real one would); the
summary gives what tracing adds per percentile and concurrency, the traced requests/s as a share of
the untraced, and the spans a request made. First, the µs one of Blaze's span calls costs untraced.
"""

import argparse
import asyncio
import contextlib
import gc
import json
import math
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET_COUNTS = [2, 32]
CONCURRENCY = [1, 32]
ROUNDS = 3  # the paths take turns, so that a change in the machine's load hits each alike
CLIENT_KEYS = [f"ip:10.0.0.{n}" for n in range(64)]  # ip_hash: 64 clients, each sticky after its first pick
CHAT = {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8}
ANSWER = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": "up",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from upstream."},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
}).encode()
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(ANSWER), ANSWER)


class UpstreamProtocol(asyncio.Protocol):
    """HTTP/1.1 with keep-alive: every request, whatever its path, gets the same chat completion.
    Request bodies must carry Content-Length (httpx and aiohttp send it for JSON). Ours rather than
    tests/upstream.py's ThreadingHTTPServer: a thread per connection is what would be measured at 32."""

    def connection_made(self, transport):
        self.transport, self.buffer = transport, b""

    def data_received(self, data):
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            length = 0
            for line in self.buffer[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length:]
            self.transport.write(RESPONSE)


def serve_upstream(port, ready):
    async def serve():
        server = await asyncio.get_running_loop().create_server(UpstreamProtocol, "127.0.0.1", port)
        ready.set()
        await server.serve_forever()

    asyncio.run(serve())


def serve_collector(port, ready, counts):
    """A loopback OTLP collector (tests/otlp.py) in its own process; `counts[0]` = spans received."""
    from tests.otlp import OtlpCollector

    collector = OtlpCollector(port)
    ready.set()
    while True:
        time.sleep(0.2)
        counts[0] = len(collector.spans)


def percentile(values, fraction):
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def timed_us(call, count, budget):
    """Microseconds of each call of `call(index)`, after a few untimed ones: `count` calls, or fewer
    if `budget` seconds run out first (at least 100)."""
    for index in range(min(50, count)):
        call(index)
    spent, ends = [], time.monotonic() + budget
    for index in range(count):
        started = time.perf_counter_ns()
        call(index)
        spent.append((time.perf_counter_ns() - started) / 1000)
        if index >= 100 and time.monotonic() > ends:
            break
    return spent


async def timed_picks_us(pick, count, budget):
    """Microseconds of each `await pick(index)`, after a few untimed ones: `count` picks, or fewer if
    `budget` seconds run out first (at least 100). `pick` returns what to await, untimed, after it."""
    for index in range(min(50, count)):
        await (await pick(index))()
    spent, ends = [], time.monotonic() + budget
    for index in range(count):
        started = time.perf_counter_ns()
        after = await pick(index)
        spent.append((time.perf_counter_ns() - started) / 1000)
        await after()
        if index >= 100 and time.monotonic() > ends:
            break
    return spent


def pick_costs(picks, budget):
    """One JSON line per (strategy, targets): the serving path's pick against strategies.pick alone."""
    from accounts.audit import Actor
    from engines import services
    from engines.models import Route
    from engines.serving.router import alease_target, candidates, state, strategies

    actor = Actor.system("bench")
    engines = [services.engine_create(actor=actor, name=f"far-{n}", kind="llm", backend="remote",
                                      base_url=f"http://127.0.0.1:9/far-{n}/v1") for n in range(max(TARGET_COUNTS))]
    for strategy in Route.Strategy.values:
        for count in TARGET_COUNTS:
            route = services.route_create(actor=actor, name=f"{strategy}-{count}", strategy=strategy)
            for index, engine in enumerate(engines[:count]):
                target = services.route_target_add(actor=actor, route=route, engine=engine, weight=1 + index % 3)
                # A few served requests each, so that the latency-driven strategies rank real numbers.
                for served in range(3):
                    state.release(target.pk, 0.05 + 0.01 * ((index + served) % 7), True, lease=state.acquire(target.pk))
            route = Route.objects.prefetch_related("targets__engine").get(pk=route.pk)
            live = candidates(route)
            route_state = state.RouteState.of(route)

            async def pick(index, route=route):
                candidate, lease, _ = await alease_target(route, client_key=CLIENT_KEYS[index % len(CLIENT_KEYS)])
                return lambda: state.awithdraw(candidate.id, lease, uncount=True)

            pick_us = asyncio.run(timed_picks_us(pick, picks, budget))
            strategy_us = timed_us(
                lambda i, strategy=strategy, live=live, route_state=route_state: strategies.pick(
                    strategy, live, route_state, CLIENT_KEYS[i % len(CLIENT_KEYS)]), picks, budget)
            print(json.dumps({
                "bench": "router", "measure": "pick", "strategy": strategy, "targets": count,
                "picks": len(pick_us), "pick_us_mean": round(sum(pick_us) / len(pick_us), 1),
                "pick_us_p99": round(percentile(pick_us, 0.99), 1),
                "strategy_picks": len(strategy_us), "strategy_us_mean": round(sum(strategy_us) / len(strategy_us), 1),
                "strategy_us_p99": round(percentile(strategy_us, 0.99), 1),
            }), flush=True)


async def latencies(send, concurrency, count):
    """Seconds each of `count` calls of `send()` took, `concurrency` of them in flight at a time."""
    spent, turns = [], iter(range(count))

    async def client():
        for _ in turns:
            started = time.perf_counter()
            await send()
            spent.append(time.perf_counter() - started)

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return spent


def http_sender(session, url, model):
    async def send():
        async with session.post(url, json={"model": model, **CHAT}) as response:
            response.raise_for_status()
            return await response.json()

    return send


async def blaze_refusal(client, url):
    """None when Blaze serves the route; else what it answered instead."""
    async with client.post(url, json={"model": "bench", **CHAT}) as response:
        return None if response.status == 200 else f"HTTP {response.status}: {(await response.text())[:300]}"


PROXY_KEY = "sk-bench"
PROXY_LOGGING = {  # uvicorn without a log line per request (daphne keeps its own: see the docstring)
    "version": 1, "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}},
    "loggers": {"uvicorn": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
                "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False}},
}


LITELLM_PROXY = ROOT / ".venv-litellm" / "bin" / "litellm"  # its own environment: requirements-bench.txt says why


def start_litellm_proxy(upstream_url, work_dir):
    """litellm's proxy server (FastAPI on uvicorn, one worker, no database) with a `bench` model on the
    upstream; None when litellm[proxy] is not installed in .venv-litellm."""
    import httpx

    from tests.servers import Process, free_port, wait_for

    if not LITELLM_PROXY.exists():
        return None

    config, logging_config = work_dir / "litellm.yaml", work_dir / "litellm-logging.json"
    config.write_text(json.dumps({  # YAML is a superset of JSON
        "model_list": [{"model_name": "bench",
                        "litellm_params": {"model": "openai/up", "api_base": upstream_url, "api_key": "x"}}],
        "litellm_settings": {"telemetry": False, "suppress_debug_info": True},
        "general_settings": {"master_key": PROXY_KEY, "disable_spend_logs": True, "disable_error_logs": True},
    }))
    logging_config.write_text(json.dumps(PROXY_LOGGING))
    port = free_port()
    process = Process(
        [str(LITELLM_PROXY), "--config", str(config), "--host", "127.0.0.1",
         "--port", str(port), "--num_workers", "1", "--telemetry", "False", "--log_config", str(logging_config)],
        work_dir / "litellm-proxy.log",
        # Not this process's environment: its DATABASE_URL would send the proxy looking for Prisma.
        {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", str(work_dir)),
         "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"},
    )

    def alive():
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health/liveliness", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(alive, 120, "litellm proxy answering", process)
    process.url = f"http://127.0.0.1:{port}"
    return process


def warm_up_size(concurrency):
    return max(20, 2 * concurrency)


def round_size(requests, concurrency):
    return max(requests // ROUNDS, concurrency)  # every client busy in every round


async def proxy_overhead(upstream_url, blaze_url, key, requests, litellm_proxy_url=None, traced_url=None):
    """One JSON line per (path, concurrency); returns {concurrency: {path: (p50 ms, p99 ms, req/s)}}. With
    `traced_url` (a traced Blaze), that and Blaze are the paths besides the direct one, not litellm."""
    import aiohttp

    if traced_url is None:
        import litellm

        litellm.suppress_debug_info = True
        router = litellm.Router(model_list=[{"model_name": "bench", "litellm_params": {
            "model": "openai/up", "api_base": upstream_url, "api_key": "x"}}])
    results = {}

    def session(**headers):
        return aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=60),
                                     connector=aiohttp.TCPConnector(limit=max(CONCURRENCY) + 8))

    async with session() as direct_client, session(Authorization=f"Bearer {key}") as blaze_client, session(
            Authorization=f"Bearer {PROXY_KEY}") as proxy_client:
        refusal = await blaze_refusal(blaze_client, f"{blaze_url}/v1/chat/completions")
        paths = {"direct": http_sender(direct_client, f"{upstream_url}/chat/completions", "up")}
        if traced_url is None:
            paths["litellm"] = lambda: router.acompletion(model="bench", **CHAT)
        if litellm_proxy_url:
            paths["litellm_proxy"] = http_sender(proxy_client, f"{litellm_proxy_url}/v1/chat/completions", "bench")
        if refusal is None:
            paths["blaze"] = http_sender(blaze_client, f"{blaze_url}/v1/chat/completions", "bench")
        if traced_url is not None:
            paths["blaze_traced"] = http_sender(blaze_client, f"{traced_url}/v1/chat/completions", "bench")
        for concurrency in CONCURRENCY:
            results[concurrency] = {}
            for send in paths.values():
                await latencies(send, concurrency, warm_up_size(concurrency))  # connections, caches
            await litellm_logged(traced_url is None)
            settle_garbage_collector()
            spent, seconds = {path: [] for path in paths}, dict.fromkeys(paths, 0.0)
            per_round = round_size(requests, concurrency)
            for _ in range(ROUNDS):
                for path, send in paths.items():
                    started = time.perf_counter()
                    spent[path] += await latencies(send, concurrency, per_round)
                    seconds[path] += time.perf_counter() - started
                    await litellm_logged(traced_url is None)
            for path in paths:
                p50, p99 = percentile(spent[path], 0.50) * 1000, percentile(spent[path], 0.99) * 1000
                results[concurrency][path] = (p50, p99, len(spent[path]) / seconds[path])
                line = {"bench": "router", "measure": "proxy", "path": path, "concurrency": concurrency,
                        "requests": len(spent[path]), "p50_ms": round(p50, 3), "p99_ms": round(p99, 3),
                        "req_s": round(len(spent[path]) / seconds[path], 1)}
                if path != "direct":
                    direct_p50, direct_p99, _ = results[concurrency]["direct"]
                    line.update(added_p50_ms=round(p50 - direct_p50, 3), added_p99_ms=round(p99 - direct_p99, 3))
                print(json.dumps(line), flush=True)
            if refusal is not None:
                print(json.dumps({"bench": "router", "measure": "proxy", "path": "blaze", "concurrency": concurrency,
                                  "error": refusal}), flush=True)
    return results


async def litellm_logged(used=True):
    """Wait for what litellm's Router left to do after answering: it hands each call's success
    logging to a worker task on this event loop (GLOBAL_LOGGING_WORKER), which would otherwise run
    during the next path's round (about 0.3 ms a call on 2 cores, a backlog of hundreds of calls after
    a round at 32 clients)."""
    if not used:
        return
    from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER

    await GLOBAL_LOGGING_WORKER.flush()


def settle_garbage_collector():
    """Collect, then freeze what this process holds (Django for the set-up and the pick costs,
    litellm, what their first calls imported): the collector's full passes walked it all, up to
    400 ms each on 2 cores, a stall for every request in flight at that moment, whichever path it
    was measuring. Each path's own garbage is still collected as it comes (daphne freezes its loaded
    code the same way: blaze_site.serve)."""
    gc.collect()
    gc.freeze()


def summary(results):
    """Whether Blaze added less latency than litellm's Router (in this process) and than litellm's proxy
    server, per concurrency and percentile (None: not measured)."""
    line = {"bench": "router", "measure": "summary"}
    peers = (("litellm", "blaze_adds_less_than_litellm"), ("litellm_proxy", "blaze_adds_less_than_litellm_proxy"))
    for peer, name in peers:
        verdict = {}
        for concurrency, paths in results.items():
            if "blaze" not in paths or peer not in paths:
                verdict[str(concurrency)] = None
                continue
            direct, blaze, other = paths["direct"], paths["blaze"], paths[peer]
            verdict[str(concurrency)] = {
                "p50": blaze[0] - direct[0] < other[0] - direct[0], "p99": blaze[1] - direct[1] < other[1] - direct[1],
            }
        line[name] = verdict
    return line


def tracing_summary(results, spans, requests):
    """What tracing added (traced minus untraced Blaze, ms) per concurrency and percentile, and the
    traced Blaze's requests/s as a share of the untraced one's."""
    added = {str(concurrency): {"p50_ms": round(paths["blaze_traced"][0] - paths["blaze"][0], 3),
                                "p99_ms": round(paths["blaze_traced"][1] - paths["blaze"][1], 3),
                                "req_s_ratio": round(paths["blaze_traced"][2] / paths["blaze"][2], 3)}
             for concurrency, paths in results.items() if "blaze" in paths and "blaze_traced" in paths}
    return {"bench": "router", "measure": "tracing_summary", "tracing_adds": added,
            "spans_per_request": round(spans / requests, 2) if requests else None}


def route_to(upstream_url):
    """Route `bench` → a remote engine on the upstream, and a viewer's `inference` key; returns the key."""
    from accounts import services as account_services
    from accounts.audit import Actor
    from engines import services
    from engines.serializers import EngineSerializer
    from tests.conftest import make_user

    actor = Actor.system("bench")
    serializer = EngineSerializer(data={"name": "bench-upstream", "kind": "llm", "backend": "remote", "model": "up",
                                        "base_url": upstream_url})
    serializer.is_valid(raise_exception=True)
    engine = services.engine_create(actor=actor, **serializer.validated_data)
    services.route_target_add(actor=actor, route=services.route_create(actor=actor, name="bench"), engine=engine)
    _, key = account_services.api_key_create(actor=actor, user=make_user("bench", "viewer"), name="bench",
                                             scopes=["inference"])
    return key


def forget_redis_keys():
    """Drop what this run left in Redis (its keys all carry the run's own prefix)."""
    from core import shared_state

    redis = shared_state.client()
    keys = list(redis.scan_iter(shared_state.key("*"), count=1000))
    if keys:
        redis.delete(*keys)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="200 picks and 40 requests: checks the bench runs")
    parser.add_argument("--requests", type=int, help="requests per path and concurrency (default 1000, quick 40)")
    parser.add_argument("--picks", type=int, help="picks per strategy and target count (default 3000, quick 200)")
    parser.add_argument("--pick-seconds", type=float, default=2.5,
                        help="at most this long per figure (a slow pick gets fewer than --picks; default 2.5)")
    parser.add_argument("--tracing", action="store_true",
                        help="Blaze traced against untraced, instead of against litellm (no pick costs)")
    parser.add_argument("--trace-ratio", type=float, default=1.0,
                        help="with --tracing: the traced Blaze's BLAZE_TRACE_SAMPLE_RATIO (default 1: every request)")
    parser.add_argument("--trace-redis", action="store_true", help="with --tracing: and BLAZE_TRACE_REDIS=1")
    args = parser.parse_args()
    # 1000: a p99 is then the 10th slowest request; of 300 it was the 3rd, and one stall of the
    # machine decided it.
    requests = args.requests or (40 if args.quick else 1000)
    picks = args.picks or (200 if args.quick else 3000)

    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # litellm would fetch its price list at import
    try:
        if not args.tracing:
            import litellm  # noqa: F401  (imported where used; checked here so a missing one fails first)
    except ImportError:
        sys.exit("litellm is not installed: .venv/bin/pip install -r requirements-bench.txt")
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("LiteLLM").setLevel(logging.WARNING)
    logging.getLogger("LiteLLM Router").setLevel(logging.WARNING)

    from bench.batching import ensure_redis, setup_django

    work_dir = Path(tempfile.mkdtemp(prefix="blaze-bench-"))
    setup_django(work_dir)
    ensure_redis()
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(forget_redis_keys)
        if args.tracing:
            return trace_costs(work_dir, requests, cleanup, args.trace_ratio, args.trace_redis)
        pick_costs(picks, args.pick_seconds)
        upstream_url, key, web = upstream_and_blaze(work_dir, cleanup)
        litellm_proxy = start_litellm_proxy(upstream_url, work_dir)
        if litellm_proxy is None:
            print(json.dumps({"bench": "router", "measure": "proxy", "path": "litellm_proxy", "error":
                              "litellm[proxy] is not installed in .venv-litellm (requirements-bench.txt)"}), flush=True)
        else:
            cleanup.callback(litellm_proxy.stop)
        results = asyncio.run(proxy_overhead(upstream_url, web.url, key, requests,
                                             litellm_proxy and litellm_proxy.url))
        print(json.dumps(summary(results)), flush=True)


def upstream_and_blaze(work_dir, cleanup):
    """The loopback upstream (a process of its own), the `bench` route to it and an untraced daphne,
    each stopped by `cleanup`; returns (upstream URL, API key, daphne) once the upstream listens."""
    from tests.servers import free_port, start_daphne

    spawn = multiprocessing.get_context("spawn")
    port, ready = free_port(), spawn.Event()
    upstream = spawn.Process(target=serve_upstream, args=(port, ready), daemon=True)
    upstream.start()
    cleanup.callback(upstream.terminate)
    upstream_url = f"http://127.0.0.1:{port}/v1"
    key = route_to(upstream_url)
    web = start_daphne(work_dir)
    cleanup.callback(web.stop)
    if not ready.wait(30):
        sys.exit("The upstream did not start listening within 30 s.")
    return upstream_url, key, web


def untraced_span_us(count=200_000):
    """µs a call of Blaze's `tracing.span()` costs with tracing off (this process: no endpoint)."""
    from core import tracing

    assert not tracing.ENABLED

    def attempt():
        with tracing.span("blaze.attempt", target="bench", engine="bench-upstream", route=None) as span:
            span.set_attribute("blaze.outcome", "answered")

    started = time.perf_counter()
    for _ in range(count):
        attempt()
    return (time.perf_counter() - started) / count * 1e6


def trace_costs(work_dir, requests, cleanup, ratio, redis_spans):
    """--tracing: the direct path, Blaze untraced and Blaze traced (`ratio` of its requests), in the
    same alternating rounds; and what a span costs untraced."""
    from tests.servers import free_port, start_daphne

    print(json.dumps({"bench": "router", "measure": "untraced_span", "us_per_call": round(untraced_span_us(), 3)}),
          flush=True)
    spawn = multiprocessing.get_context("spawn")
    collector_port, collected, counts = free_port(), spawn.Event(), spawn.Array("l", 1)
    collector = spawn.Process(target=serve_collector, args=(collector_port, collected, counts), daemon=True)
    collector.start()
    cleanup.callback(collector.terminate)
    upstream_url, key, web = upstream_and_blaze(work_dir, cleanup)
    traced = start_daphne(work_dir, OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{collector_port}",
                          BLAZE_TRACE_SAMPLE_RATIO=str(ratio), BLAZE_TRACE_REDIS="1" if redis_spans else "")
    cleanup.callback(traced.stop)
    if not collected.wait(30):
        sys.exit("The collector did not start listening within 30 s.")
    results = asyncio.run(proxy_overhead(upstream_url, web.url, key, requests, traced_url=traced.url))
    time.sleep(6)  # the traced daphne's last batch export (every 5 s by default)
    sent = sum(warm_up_size(c) + ROUNDS * round_size(requests, c) for c in CONCURRENCY)  # to the traced path
    print(json.dumps({**tracing_summary(results, counts[0], sent), "sample_ratio": ratio, "redis_spans": redis_spans}),
          flush=True)


if __name__ == "__main__":
    main()
