"""The last /v1 requests, each with its story, for the Requests page: the route and the target chosen,
the targets skipped and why, each attempt (and so each failover), the time queued for a worker, the
time to first token, tokens (generated, and of the prompt: how many its engine's prefix cache supplied),
status, request id and trace id. The answer to "latency went up: why?".

Kept in Redis, bounded (BLAZE_REQUEST_LOG_SIZE), never in the database. Prompts and answers are kept
only for routes whose operator turned `keep_prompts` on; keys and other secrets never.

The serving path notes what happens into the request's entry (a context variable, so nothing is
passed around), and the entry is written when the answer is complete. Writes are gathered per event
loop and sent every FLUSH_SECONDS in one round trip, so a request pays no Redis round trip for it.
"""

import asyncio
import contextvars
import json
import time

from django.conf import settings

from core import shared_state, tracing

FLUSH_SECONDS = 0.2
TEXT_LIMIT = 4000

_current = contextvars.ContextVar("request_log_entry", default=None)
_pending = {}  # event loop -> entries waiting for the next flush


def begin(*, request_id, endpoint, client=""):
    """Start the request's entry; the serving path's notes go into it from here on."""
    entry = {"id": request_id, "t": time.time(), "endpoint": endpoint, "client": client, "model": None,
             "route": None, "attempts": [], "skipped": {}, "status": None, "tokens": None, "prompt_tokens": None,
             "cached_tokens": None, "queue_seconds": None, "ttft_seconds": None, "trace_id": tracing.trace_id()}
    _current.set(entry)
    return entry


def current():
    """The entry of the request being served, or None outside one."""
    return _current.get()


def note(**fields):
    entry = _current.get()
    if entry is not None:
        entry.update(fields)


def token_counts(usage):
    """The entry's token fields from an answer's OpenAI `usage` (a local engine's, or a remote host's as
    it sent it): `tokens` generated, `prompt_tokens`, and `cached_tokens`, those of the prompt the
    engine's prefix cache supplied. None where the usage does not say (or says it in something other
    than a count)."""
    usage = usage if isinstance(usage, dict) else {}
    details = usage.get("prompt_tokens_details")
    details = details if isinstance(details, dict) else {}

    def count(value):
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None

    return {"tokens": count(usage.get("completion_tokens")), "prompt_tokens": count(usage.get("prompt_tokens")),
            "cached_tokens": count(details.get("cached_tokens"))}


def note_skipped(reasons):
    """{target label: why} of the targets the router passed over for this request."""
    entry = _current.get()
    if entry is not None and reasons:
        entry["skipped"].update(reasons)


def note_attempt(*, target, engine, worker=None, outcome, seconds, error=""):
    entry = _current.get()
    if entry is not None:
        entry["attempts"].append({"target": target, "engine": engine, "worker": worker, "outcome": outcome,
                                  "seconds": round(seconds, 4), "error": error[:500]})


def note_text(prompt=None, answer=None):
    """The prompt and answer, if the entry's route keeps them."""
    entry = _current.get()
    if entry is not None and entry.get("keep_prompts"):
        if prompt is not None:
            entry["prompt"] = prompt[:TEXT_LIMIT]
        if answer is not None:
            entry["answer"] = answer[:TEXT_LIMIT]


def note_prompt(payload):
    """What the client asked (a request's payload: messages, a prompt or an input), if the entry's
    route keeps prompts."""
    if payload.get("messages"):
        text = "\n".join(f"{m['role']}: {m['content']}" for m in payload["messages"])
    else:
        text = payload.get("prompt") or payload.get("input") or ""
    note_text(prompt=text if isinstance(text, str) else "\n".join(text))


def finish(entry, *, status, **fields):
    """The answer is complete: the entry goes out with the next flush."""
    entry.update(fields, status=status, seconds=round(time.time() - entry["t"], 4))
    entry.pop("keep_prompts", None)
    loop = asyncio.get_running_loop()
    waiting = _pending.setdefault(loop, [])
    waiting.append(entry)
    if len(waiting) == 1:
        loop.call_later(FLUSH_SECONDS, lambda: loop.create_task(_flush(loop)))


async def _flush(loop):
    entries = _pending.pop(loop, [])
    if not entries:
        return

    def queue(pipe):
        key = shared_state.request_log_key()
        pipe.lpush(key, *(json.dumps(entry) for entry in entries))
        pipe.ltrim(key, 0, settings.BLAZE_REQUEST_LOG_SIZE - 1)

    try:
        await shared_state.abatch(queue)
    except Exception:  # noqa: BLE001 - the log is for people; losing a few entries never fails a request
        pass


def entries(*, route="", engine="", status="", client="", limit=200):
    """The newest entries first, filtered: `route` (the model asked for), `engine` (any attempt's),
    `status` ("2xx", "4xx", "5xx" or an exact code), `client` (an API key's label)."""
    found = []
    for raw in shared_state.client().lrange(shared_state.request_log_key(), 0, -1):
        entry = json.loads(raw)
        if route and entry.get("model") != route:
            continue
        if engine and not any(attempt["engine"] == engine for attempt in entry["attempts"]):
            continue
        if status and not _status_matches(entry.get("status"), status):
            continue
        if client and entry.get("client") != client:
            continue
        found.append(entry)
        if len(found) >= limit:
            break
    return found


def entry(request_id):
    return next((e for e in entries(limit=settings.BLAZE_REQUEST_LOG_SIZE) if e["id"] == request_id), None)


def _status_matches(code, wanted):
    if code is None:
        return False
    return str(code)[0] == wanted[0] if wanted.endswith("xx") else str(code) == wanted
