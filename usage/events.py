"""Usage events: what one served request used, appended to a Redis stream by whoever saw it end, and
stored in the database in the background (`persist`). Recording is one XADD: no database write on the
request path.

- A local engine's request is recorded by the worker that ran it (engines/worker/host.py): it knows
  what it computed, and it records it even when the web process that asked has died mid-stream. The
  web side sends who asked along in the payload (`tags`, under USAGE_FIELD).
- A remote engine's request is recorded by the web process, from the host's answer (its `usage`, or
  the chunks relayed when a stream carried none).

An event's `id` is the request's id as the worker knows it (plus the row of an embedding group), so
a task delivered twice after a crash is stored once."""

import time
from typing import Any

import orjson
from django.conf import settings

from core import shared_state

USAGE_FIELD = "usage"  # the payload field that carries `tags` to the worker


def tags(*, user_id: int | None, api_key_id: int | None, team_id: int | None, source: str, endpoint: str,
         route: str | None) -> dict[str, Any]:
    """Who asked, and through what: what the record keeps besides the counts."""
    return {"user_id": user_id, "api_key_id": api_key_id, "team_id": team_id, "source": source, "kind": endpoint,
            "route": route or ""}


def counts(kind: str, request: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """The counts of a worker's result for one request of `kind` (an endpoint name)."""
    if kind == "embedding":
        return {"embedding_inputs": len(request.get("input") or ()), "prompt_tokens": result.get("prompt_tokens", 0),
                "worker_seconds": result.get("worker_seconds", 0.0)}
    if kind in ("image", "image_edit"):
        return {"images": len(result.get("images") or ()), "steps": result.get("steps_run", request.get("steps", 0)),
                "worker_seconds": result.get("worker_seconds", 0.0)}
    return {"prompt_tokens": result.get("prompt_tokens", 0), "cached_tokens": result.get("cached_tokens") or 0,
            "completion_tokens": result.get("completion_tokens", 0),
            "worker_seconds": result.get("worker_seconds", 0.0)}


def _event(event_id: str, tagged: dict[str, Any], engine: str, worker: str, outcome: str,
           counted: dict[str, Any], adapter: str = "") -> dict[str, bytes]:
    event = {"id": event_id, "at": time.time(), **tagged, "engine": engine, "worker": worker, "outcome": outcome,
             **({"adapter": adapter} if adapter else {}), **counted}
    return {"event": orjson.dumps(event)}


def record(event_id: str, tagged: dict[str, Any], *, engine: str, worker: str = "", outcome: str = "answered",
           adapter: str = "", **counted: Any) -> None:
    """Append one usage event (raises redis.RedisError: callers log it and go on); `adapter`: the LoRA
    adapter the engine ran it under, if any."""
    shared_state.client().xadd(shared_state.usage_events_key(), _event(event_id, tagged, engine, worker, outcome,
                                                                       counted, adapter),
                               maxlen=settings.BLAZE_USAGE_STREAM_MAX, approximate=True)


async def arecord(event_id: str, tagged: dict[str, Any], *, engine: str, outcome: str = "answered",
                  **counted: Any) -> None:
    """`record` on the event loop's Redis client."""
    await shared_state.loop_client().xadd(shared_state.usage_events_key(),
                                          _event(event_id, tagged, engine, "", outcome, counted),
                                          maxlen=settings.BLAZE_USAGE_STREAM_MAX, approximate=True)


class RemoteMeter:
    """What a remote host's answer used, as far as it says: the `usage` of its JSON answer or of its
    stream's last chunk; a stream that carries none counts its content chunks as completion tokens
    (what the request log does too). Recorded once, by `arecord_once`."""

    def __init__(self, tagged: dict[str, Any], engine: str, body: dict[str, Any]) -> None:
        self.tagged, self.engine, self.body = tagged, engine, body
        self.usage: dict[str, Any] | None = None
        self.chunks, self.images, self._buffer, self._recorded = 0, 0, b"", False

    def answer(self, body: bytes) -> None:
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            return
        if isinstance(answer, dict):
            self.usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else None
            if self.tagged["kind"] in ("image", "image_edit") and isinstance(answer.get("data"), list):
                self.images = len(answer["data"])

    def chunk(self, chunk: bytes) -> None:
        self._buffer += chunk
        while b"\n\n" in self._buffer:
            event, self._buffer = self._buffer.split(b"\n\n", 1)
            data = event.removeprefix(b"data: ").strip()
            if not data or data == b"[DONE]":
                continue
            if b'"usage"' in data:
                try:
                    usage = orjson.loads(data).get("usage")
                except (orjson.JSONDecodeError, AttributeError):
                    usage = None
                if isinstance(usage, dict):
                    self.usage = usage
                    continue
            if b'"choices"' in data:
                self.chunks += 1

    def counts(self) -> dict[str, Any]:
        usage = self.usage or {}
        details = usage.get("prompt_tokens_details") or {}
        prompt = int(usage.get("prompt_tokens") or 0)
        if self.tagged["kind"] == "embedding":
            inputs = self.body.get("input")
            return {"prompt_tokens": prompt, "embedding_inputs": len(inputs) if isinstance(inputs, list) else 1}
        if self.tagged["kind"] in ("image", "image_edit"):
            return {"images": self.images}
        completion = usage.get("completion_tokens") if self.usage else self.chunks
        return {"prompt_tokens": prompt, "cached_tokens": int(details.get("cached_tokens") or 0),
                "completion_tokens": int(completion or 0)}

    async def arecord_once(self, event_id: str, outcome: str = "answered") -> None:
        if self._recorded:
            return
        self._recorded = True
        await arecord(event_id, self.tagged, engine=self.engine, outcome=outcome, **self.counts())
