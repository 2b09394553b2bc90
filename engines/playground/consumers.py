"""The playground's chat socket (/ws/playground/): a signed-in user's prompt streamed token by token
through the same serving path as /v1 (plan, validation against the engine's caps, failover, the
worker's batcher), with Stop that cancels the generation in the worker.

Messages in:  {"type": "chat", "id", "model", "messages": [...], "temperature", "top_p", "max_tokens",
               "seed", "stop", "response_format", "tools", "tool_choice"}  ·  {"type": "stop", "id"}  ·
              {"type": "embed", "id", "model", "texts": [...]}  ·
              {"type": "image", "id", "model", "prompt", "negative_prompt", "size", "steps", "guidance_scale",
               "seed", "image" (a data URL, for image-to-image), "strength"}
Messages out (`done`'s stats, `similarity` and `images` with "trace_id" and "trace_url" when traced):
              {"type": "token", "id", "text"} ·
              {"type": "done", "id", "finish_reason", "stats", "content", "tool_calls": [{"id", "name", "arguments"}],
               "json_valid" (with a JSON response format)} ·
              {"type": "similarity", "id", "texts", "matrix", "dimension", "ms", "target"} ·
              {"type": "progress", "id", "step", "total"} · {"type": "images", "id", "urls", "seed", "ms", "target"} ·
              {"type": "loading", "id", "message"} (a cold start: "loading smollm2 on w1@host, about 4 s") ·
              {"type": "stopped", "id"} · {"type": "error", "id", "message", "field"}

A chat's tokens stream as the model writes them (a tool call's too); `done` then carries the answer as
/v1 gives it: its content and its parsed tool calls (answers.chat_choice, for a local engine).

Each prompt is the /v1 request it stands for: it counts against the rate limits as that request
(V1_PATHS), and from its InferenceRequest on it takes /v1's path (engines/openai/inference.py).

Several chats may run at once on one socket (the compare view sends one per pane).
"""

import asyncio
import base64
import json
import time

import numpy
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from rest_framework.exceptions import ValidationError

from core import errors, lookups, tracing
from core.http_errors import OUTAGES, http_status
from core.sockets import REFUSED, may_see_engines
from engines import contract, services
from engines.openai import answers, inference
from engines.serving.request import InferenceRequest
from engines.serving.router import client_key
from ratelimits import admission
from telemetry import request_log

V1_PATHS = {"chat": "/v1/chat/completions", "embedding": "/v1/embeddings", "image": "/v1/images/generations",
            "image_edit": "/v1/images/edits"}  # what each message counts as against the rate limits
CHAT_FIELDS = ("messages", "temperature", "top_p", "max_tokens", "seed", "stop", "response_format", "tools",
               "tool_choice")
IMAGE_FIELDS = ("prompt", "negative_prompt", "size", "steps", "guidance_scale", "seed", "image", "strength")


def _endpoint(content):
    """The /v1 endpoint a message stands for."""
    kind = content["type"]
    if kind == "image":
        return "image_edit" if content.get("image") else "image"
    return "embedding" if kind == "embed" else kind


def _body(content):
    """The /v1 request body a message stands for."""
    model, kind = content.get("model"), content["type"]
    if kind == "chat":
        given = {k: content[k] for k in CHAT_FIELDS if content.get(k) not in (None, "")}
        return {"model": model, "stream": True, **given}
    if kind == "embed":
        texts = content.get("texts")
        if not isinstance(texts, list) or not 2 <= len(texts) <= 16:
            raise errors.InvalidInput("Give 2 to 16 texts to compare.", field="texts")
        return {"model": model, "input": texts}
    return {"model": model, **{k: content[k] for k in IMAGE_FIELDS if content.get(k) not in (None, "")}}


class PlaygroundConsumer(AsyncJsonWebsocketConsumer):
    WORK = {"chat": "_stream", "embed": "_similarity", "image": "_images"}  # message type → its handler

    async def connect(self):
        if not await may_see_engines(self.scope):
            await self.close(code=REFUSED)
            return
        self.running = {}
        await self.accept()

    async def disconnect(self, code):
        for task in getattr(self, "running", {}).values():
            task.cancel()  # a closed page gives its generations up: the workers stop them

    async def receive_json(self, content, **kwargs):
        kind, ident = content.get("type"), str(content.get("id", ""))
        if kind in self.WORK and ident and ident not in self.running:
            self.running[ident] = asyncio.create_task(self._run(ident, content, getattr(self, self.WORK[kind])))
        elif kind == "stop" and ident in self.running:
            self.running[ident].cancel()
        elif kind not in (*self.WORK, "stop"):
            await self.send_json({"type": "error", "id": ident, "message": "type: expected chat, embed, image or "
                                  "stop.", "field": "type"})

    async def _admitted(self, endpoint):
        """Counted against the rate limits as the /v1 request this message stands for, for the signed-in
        user and their IP; over a limit: RateLimited (a delay policy waits here, as over HTTP)."""
        client = self.scope.get("client") or (None,)

        async def signed_in():
            return self.scope["user"]

        verdict = await admission.averdict(admission.counted_as(V1_PATHS[endpoint], client[0]), signed_in)
        if verdict.refused_by is not None:
            raise errors.RateLimited(verdict.message, code="rate_limit_exceeded")

    async def _run(self, ident, content, work):
        # A trace of its own per prompt, as an HTTP request has (the socket may stay open for hours).
        with tracing.span(f"playground {content['type']}", kind=tracing.SERVER, user=self.scope["user"].username):
            await self._handle(ident, content, work)

    async def _handle(self, ident, content, work):
        entry = request_log.begin(request_id=f"playground-{ident}-{time.time_ns()}", endpoint="/ws/playground/",
                                  client=f"user {self.scope['user'].username} (playground)")
        status, asked = 200, None
        try:
            endpoint = _endpoint(content)
            await self._admitted(endpoint)
            asked = await self._request(endpoint, content)
            await inference.prepare(asked)
            await work(ident, asked, entry)
        except asyncio.CancelledError:
            status = 499  # nginx's "client closed request": the user pressed Stop
            await self.send_json({"type": "stopped", "id": ident})
        except (errors.ApplicationError, ValidationError, *OUTAGES) as exc:
            failure = inference.refusal(exc)
            status = http_status(failure)
            await self.send_json({"type": "error", "id": ident, "message": failure.message, "field": failure.field})
        finally:
            self.running.pop(ident, None)
            request_log.finish(entry, status=status)
            inference.observe(asked, status, time.time() - entry["t"])  # as a /v1 request would be

    async def _request(self, endpoint, content):
        """The InferenceRequest a message stands for, from the signed-in user (keyed by their session
        for the routes that keep a client on one target)."""
        body = _body(content)
        priority = await database_sync_to_async(lambda: self.scope["user"].priority)()
        return InferenceRequest(endpoint=endpoint, body=body, priority=priority, generation=await lookups.generation(),
                                client_key=client_key(session_key=self.scope["session"].session_key),
                                stream=endpoint != "embedding",  # a local image streams its progress
                                user_id=self.scope["user"].pk,
                                source="playground" if settings.BLAZE_USAGE_ENABLED else "")

    async def _stream(self, ident, asked, entry):
        plan, data = asked.plan, asked.data
        started = time.monotonic()
        served = await inference.serve(asked)
        times, pieces, finish, counted, message = [], [], None, None, None
        async def loading(text):
            await self.send_json({"type": "loading", "id": ident, "message": text})

        async for text, reason, tokens, answer in _texts(served, data, loading):
            finish, counted, message = reason or finish, tokens or counted, answer or message
            if text:
                times.append(time.monotonic())
                pieces.append(text)
                await self.send_json({"type": "token", "id": ident, "text": text})
        ended = time.monotonic()
        request_log.note_text(answer="".join(pieces))
        attempts = entry["attempts"]  # the last one answered
        tokens = counted or len(times)  # the engine's count; a remote stream's pieces otherwise
        request_log.note(tokens=tokens, ttft_seconds=round(times[0] - started, 4) if times else None)
        await self.send_json({"type": "done", "id": ident, "finish_reason": finish, **_answer(message, data), "stats": {
            "ttft_ms": round((times[0] - started) * 1000, 1) if times else None, "tokens": tokens,
            "tokens_per_second": round((tokens - 1) / (ended - times[0]), 1) if len(times) > 1 else None,
            "itl_ms": [round((b - a) * 1000, 1) for a, b in zip(times, times[1:])],
            "target": _served_by(entry, plan), "fallback": served.fallback,
            "worker": (attempts[-1].get("worker") if attempts else None) or entry.get("worker"),
            "skipped": entry["skipped"], **tracing.trace_link(),
        }})

    async def _similarity(self, ident, asked, entry):
        plan, data = asked.plan, asked.data
        started = time.monotonic()
        served = await inference.serve(asked)
        vectors = (served.result["embeddings"] if served.response is None
                   else [item["embedding"] for item in json.loads(served.body)["data"]])
        matrix = numpy.asarray(vectors, dtype="float64")
        matrix /= numpy.linalg.norm(matrix, axis=1, keepdims=True).clip(min=1e-12)
        await self.send_json({
            "type": "similarity", "id": ident, "texts": data["input"],
            "matrix": numpy.round(matrix @ matrix.T, 4).tolist(), "dimension": matrix.shape[1],
            "ms": round((time.monotonic() - started) * 1000, 1), "target": _served_by(entry, plan),
            "fallback": served.fallback, **tracing.trace_link(),
        })

    async def _images(self, ident, asked, entry):
        plan, payload, started = asked.plan, asked.payload, time.monotonic()
        # Streamed for a local engine's progress; a remote host (the route's or a fallback's) answers whole.
        served = await inference.serve(asked)
        remote = served.response is not None
        result = json.loads(served.body) if remote else None
        if not remote:
            async for event in inference.events(served):
                if event["type"] == contract.LOADING:
                    await self.send_json({"type": "loading", "id": ident, "message": contract.loading_text(event)})
                elif event["type"] == contract.PROGRESS:
                    await self.send_json({"type": "progress", "id": ident, "step": event["step"],
                                          "total": event["total"]})
                elif event["type"] == contract.DONE:
                    result = event["result"]
        images = result["images"] if not remote else [item["b64_json"] for item in result["data"]]
        seed = result.get("seed", payload["seed"])
        urls = await database_sync_to_async(services.store_images)(
            user=self.scope["user"], engine_name=plan.name, payload=payload, seed=seed,
            pngs=[base64.b64decode(image) for image in images])
        await self.send_json({"type": "images", "id": ident, "urls": urls, "seed": seed,
                              "ms": round((time.monotonic() - started) * 1000, 1), "target": _served_by(entry, plan),
                              "fallback": served.fallback, **tracing.trace_link()})


def _served_by(entry, plan):
    """The target that answered (the request's last attempt), else the model named."""
    return entry["attempts"][-1]["target"] if entry["attempts"] else plan.name


def _answer(message, data):
    """What `done` says of the answer: its content, its tool calls (parsed) and, with a JSON response
    format, whether the content parses."""
    calls = [{"id": call.get("id"), "name": call["function"]["name"], "arguments": call["function"]["arguments"]}
             for call in message.get("tool_calls") or []]
    said = {"content": message.get("content"), "tool_calls": calls}
    if (data.get("response_format") or {}).get("type") in ("json_object", "json_schema") and not calls:
        try:
            json.loads(message.get("content") or "")
            said["json_valid"] = True
        except json.JSONDecodeError:
            said["json_valid"] = False  # cut off by max_tokens, or a remote host that does not enforce it
    return said


async def _texts(served, data, loading):
    """(text, finish reason or None, completion tokens or None, message or None) as the answer streams: a
    local engine's events, or a remote host's server-sent events. The last carries the answer's message
    as /v1 gives it ({"content", "tool_calls"?}), assembled from a remote host's deltas. A cold start's
    text goes to `loading` (awaited) first."""
    if served.response is None:
        async for event in inference.events(served):
            if event["type"] == contract.LOADING:
                await loading(contract.loading_text(event))
            elif event["type"] == contract.TOKEN:
                yield event["text"], None, None, None
            elif event["type"] == contract.DONE:
                row = answers.rows(event["result"])[0]
                choice = answers.chat_choice(0, row, data)
                yield "", choice["finish_reason"], row.get("completion_tokens"), choice["message"]
        return
    buffer, pieces, calls = b"", [], {}
    async for chunk in served.chunks():
        buffer += chunk
        while b"\n\n" in buffer:
            line, buffer = buffer.split(b"\n\n", 1)
            sent = line.removeprefix(b"data: ").strip()
            if not sent or sent == b"[DONE]":
                continue
            chunk = json.loads(sent)
            if "error" in chunk:  # the host's stream broke off (failover.Served.chunks says so)
                raise errors.UpstreamFailed(chunk["error"]["message"])
            choice = (chunk.get("choices") or [{}])[0]
            delta = choice.get("delta") or {}
            content, arguments = delta.get("content") or "", ""
            for part in delta.get("tool_calls") or []:  # OpenAI's: the id and name once, the arguments in pieces
                call = calls.setdefault(part.get("index", 0), {"id": None, "function": {"name": "", "arguments": ""}})
                function = part.get("function") or {}
                call["id"] = part.get("id") or call["id"]
                call["function"]["name"] += function.get("name") or ""
                call["function"]["arguments"] += function.get("arguments") or ""
                arguments += function.get("arguments") or ""
            pieces.append(content)
            # A call's arguments stream as its text, as a local engine's forced call does.
            yield content + arguments, choice.get("finish_reason"), (chunk.get("usage") or {}).get(
                "completion_tokens"), None
    yield "", None, None, {"content": "".join(pieces) or None, "tool_calls": [calls[at] for at in sorted(calls)]}
