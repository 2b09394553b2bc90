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
              {"type": "stopped", "id"} · {"type": "error", "id", "message", "field"}

A chat's tokens stream as the model writes them (a tool call's too); `done` then carries the answer as
/v1 gives it: its content and its parsed tool calls (answers.chat_choice, for a local engine).

Each prompt counts against the rate limits as the /v1 request it stands for (V1_PATHS).

Several chats may run at once on one socket (the compare view sends one per pane).
"""

import asyncio
import base64
import json
import time

import numpy
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from rest_framework.exceptions import ValidationError

from blaze_site import errors, tracing
from blaze_site.exceptions import OUTAGES, flatten, http_status, outage
from blaze_site.sockets import REFUSED, may_see_engines
from engines import contract, services
from engines.models import Engine
from engines.openai import answers
from engines.openai.protocol import ChatCompletionSerializer, EmbeddingSerializer, ImageEditSerializer, ImageSerializer
from engines.serving import failover
from engines.serving import plan as plans
from engines.serving.router import client_key
from monitoring import metrics, request_log
from ratelimits import admission

V1_PATHS = {"chat": "/v1/chat/completions", "embed": "/v1/embeddings", "image": "/v1/images/generations",
            "image_edit": "/v1/images/edits"}  # what each message counts as against the rate limits
FIELDS = ("messages", "temperature", "top_p", "max_tokens", "seed", "stop", "response_format", "tools", "tool_choice")


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

    async def _admitted(self, content):
        """Counted against the rate limits as the /v1 request this message stands for, for the signed-in
        user and their IP; over a limit: RateLimited (a delay policy waits here, as over HTTP)."""
        kind = "image_edit" if content["type"] == "image" and content.get("image") else content["type"]
        client = self.scope.get("client") or (None,)

        async def signed_in():
            return self.scope["user"]

        verdict = await admission.averdict(admission.counted_as(V1_PATHS[kind], client[0]), signed_in)
        if verdict.refused_by is not None:
            raise errors.RateLimited(verdict.message, code="rate_limit_exceeded")

    async def _run(self, ident, content, work):
        # A trace of its own per prompt, as an HTTP request has (the socket may stay open for hours).
        with tracing.span(f"playground {content['type']}", kind=tracing.SERVER, user=self.scope["user"].username):
            await self._handle(ident, content, work)

    async def _handle(self, ident, content, work):
        entry = request_log.begin(request_id=f"playground-{ident}-{time.time_ns()}", endpoint="/ws/playground/",
                                  client=f"user {self.scope['user'].username} (playground)")
        status = 200
        try:
            await self._admitted(content)
            await work(ident, content, entry)
        except asyncio.CancelledError:
            status = 499  # nginx's "client closed request": the user pressed Stop
            await self.send_json({"type": "stopped", "id": ident})
        except (errors.ApplicationError, *OUTAGES) as exc:
            exc = outage(exc) if isinstance(exc, OUTAGES) else exc
            status = http_status(exc)
            await self.send_json({"type": "error", "id": ident, "message": exc.message, "field": exc.field})
        except ValidationError as exc:
            status = 400
            field, messages = next(iter(flatten(exc.detail).items()))
            await self.send_json({"type": "error", "id": ident, "message": f"{field}: {messages[0]}", "field": field})
        finally:
            self.running.pop(ident, None)
            request_log.finish(entry, status=status)
            if entry["model"]:  # in the dashboard's per-model series, as a /v1 request would be
                metrics.observe_model_request(entry["model"], status, time.time() - entry["t"])

    async def _validated(self, kind, serializer_class, body):
        """(plan, validated data) of a request, as /v1 checks it: the model named, of that kind, and the
        body against the caps of its engine."""
        plan = await database_sync_to_async(plans.resolve)(body["model"], kind)
        priority = await database_sync_to_async(lambda: self.scope["user"].priority)()
        request_log.note(model=plan.name, route=plan.route.name if plan.route else None,
                         keep_prompts=bool(plan.route and plan.route.keep_prompts))
        serializer = serializer_class(data=body, context={"engine": plan.engine, "priority": priority})
        serializer.is_valid(raise_exception=True)
        request_log.note_prompt(serializer.validated_data["payload"])
        return plan, serializer.validated_data

    async def _serve(self, plan, endpoint, payload, body, stream=False):
        return await failover.serve(plan, endpoint, payload, body, stream=stream,
                                    client_key=client_key(session_key=self.scope["session"].session_key))

    async def _stream(self, ident, content, entry):
        given = {key: content[key] for key in FIELDS if content.get(key) not in (None, "")}
        body = {"model": content.get("model"), "stream": True, **given}
        plan, data = await self._validated(Engine.Kind.LLM, ChatCompletionSerializer, body)
        started = time.monotonic()
        served = await self._serve(plan, "chat", data["payload"], body, stream=True)
        times, pieces, finish, counted, message = [], [], None, None, None
        async for text, reason, tokens, answer in _texts(served, data):
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

    async def _similarity(self, ident, content, entry):
        texts = content.get("texts")
        if not isinstance(texts, list) or not 2 <= len(texts) <= 16:
            raise errors.InvalidInput("Give 2 to 16 texts to compare.", field="texts")
        body = {"model": content.get("model"), "input": texts}
        plan, data = await self._validated(Engine.Kind.EMBEDDING, EmbeddingSerializer, body)
        started = time.monotonic()
        served = await self._serve(plan, "embedding", data["payload"], body)
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

    async def _images(self, ident, content, entry):
        edit = bool(content.get("image"))
        fields = ("prompt", "negative_prompt", "size", "steps", "guidance_scale", "seed", "image", "strength")
        body = {"model": content.get("model"), **{k: content[k] for k in fields if content.get(k) not in (None, "")}}
        serializer_class = ImageEditSerializer if edit else ImageSerializer
        plan, data = await self._validated(Engine.Kind.DIFFUSION, serializer_class, body)
        payload, started = data["payload"], time.monotonic()
        # Streamed for a local engine's progress; a remote host (the route's or a fallback's) answers whole.
        served = await self._serve(plan, "image_edit" if edit else "image", payload, body, stream=True)
        remote = served.response is not None
        result = json.loads(served.body) if remote else None
        if not remote:
            try:
                async for event in served.events:
                    if event["type"] == contract.PROGRESS:
                        await self.send_json({"type": "progress", "id": ident, "step": event["step"],
                                              "total": event["total"]})
                    elif event["type"] == contract.DONE:
                        result = event["result"]
                    elif event["type"] == contract.ERROR:
                        raise contract.error_from(event)
            finally:
                await served.events.aclose()
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


async def _texts(served, data):
    """(text, finish reason or None, completion tokens or None, message or None) as the answer streams: a
    local engine's events, or a remote host's server-sent events. The last carries the answer's message
    as /v1 gives it ({"content", "tool_calls"?}), assembled from a remote host's deltas."""
    if served.response is None:
        try:
            async for event in served.events:
                if event["type"] == contract.TOKEN:
                    yield event["text"], None, None, None
                elif event["type"] == contract.DONE:
                    row = answers.rows(event["result"])[0]
                    choice = answers.chat_choice(0, row, data)
                    yield "", choice["finish_reason"], row.get("completion_tokens"), choice["message"]
                elif event["type"] == contract.ERROR:
                    raise contract.error_from(event)
        finally:
            await served.events.aclose()
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
