"""The OpenAI-compatible inference API under /v1: what the official `openai` client expects.

Plain async Django views (DRF has no streaming responses): JSON in, JSON or server-sent events
out, errors in OpenAI's shape {"error": {"message", "type", "param", "code"}}. `v1_endpoint`
authenticates and makes the InferenceRequest; `inference` (shared with the playground) resolves the
`model` to a route or an engine, validates, and serves it. A local engine's result is shaped here; a
remote engine's answer is relayed as its host sent it (streams chunk by chunk).
"""

import base64
import json
import time
import uuid
from dataclasses import dataclass
from functools import partial, wraps
from typing import Any

import numpy
import orjson
from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions as drf_exceptions
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import ValidationError
from rest_framework_simplejwt.authentication import JWTAuthentication

from accounts.audit import client_ip
from accounts.authentication import bearer_api_key, check_key, find_key, mark_used, stale_last_used
from accounts.models import ApiKey
from core import errors, logs, lookups
from core.http_errors import OUTAGES, RETRY_AFTER_SECONDS, http_status
from core.views import openai_error
from engines import contract, selectors, services
from engines.models import Engine, Route
from engines.openai import answers, inference
from engines.serving.request import InferenceRequest
from engines.serving.router import client_key
from telemetry import request_log


def _openai_error(exc):
    """An ApplicationError as OpenAI's error object, with its status."""
    return openai_error(http_status(exc), exc.message, exc.field, exc.code)


def _key_and_permission(raw):
    """(the API key `raw` names, whether its owner may use engines, its priority), or None for an unknown key."""
    key = find_key(raw)
    return None if key is None else (key, key.user.has_perm("engines.view_engine"), key.effective_priority)


def _token_user(request):
    """The user a DRF token or a JWT names, or None when the request sends neither; raises an ApplicationError."""
    for authenticator in (TokenAuthentication(), JWTAuthentication()):
        try:
            result = authenticator.authenticate(request)
        except drf_exceptions.AuthenticationFailed as exc:
            raise errors.NotAuthenticated(str(exc.detail), code="invalid_api_key") from exc
        if result is not None:
            user = result[0]
            return user, user.has_perm("engines.view_engine"), user.priority
    return None, False, 0


@dataclass(frozen=True)
class Caller:
    """Who sent a /v1 request: the user, the key the routes that keep a client on one target use, the
    priority their requests are admitted with, and the API key (and its team) usage is counted under."""

    user: Any
    client_key: str
    priority: int
    api_key_id: int | None = None
    team_id: int | None = None


async def _authenticate(request, generation):
    """API key (scope `inference`, looked up through `lookups`), DRF token or JWT → Caller; raises an
    ApplicationError."""
    raw, api_key_id, team_id = bearer_api_key(request), None, None
    if raw is not None:
        key, may_use, priority = await lookups.cached("api_key", ApiKey.hash(raw), generation,
                                                      partial(_key_and_permission, raw)) or (None, False, 0)
        try:
            check_key(key)
        except drf_exceptions.AuthenticationFailed as exc:
            raise errors.NotAuthenticated(str(exc.detail), code="invalid_api_key") from exc
        if "inference" not in key.scopes:
            raise errors.PermissionDenied("This API key lacks the 'inference' scope.", code="insufficient_scope")
        if stale_last_used(key):
            await sync_to_async(mark_used)(key)
        user, api_key_id, team_id = key.user, key.pk, getattr(key, "team_id", None)
        request_log.note(client=str(key))
    else:
        user, may_use, priority = await sync_to_async(_token_user)(request)
        if user is None:
            raise errors.NotAuthenticated("Send an API key: Authorization: Bearer blz_…", code="missing_api_key")
        request_log.note(client=f"user {user.username}")
    if not may_use:
        raise errors.PermissionDenied("Your account has no role that may use engines.")
    return Caller(user, client_key(api_key_id=api_key_id, ip=client_ip(request)), priority, api_key_id, team_id)


FALLBACK_HEADER = "X-Blaze-Fallback"  # on an answer a route's fallback gave: that fallback's name
BUDGET_HEADER = "X-Blaze-Budget-Remaining"  # the least room left on the budgets the request counts against


def v1_endpoint(endpoint=None):
    """Authenticate, then call the view with the caller and, for an inference `endpoint` (chat,
    completion, embedding, image, image_edit), the InferenceRequest its POST body makes; answer
    ApplicationErrors and validation errors in OpenAI's shape; mark an answer a route's fallback gave
    (FALLBACK_HEADER)."""

    def decorator(view):
        @csrf_exempt
        @wraps(view)
        async def wrapper(request):
            started = time.monotonic()
            entry = request_log.begin(request_id=logs.request_id.get(), endpoint=request.path)
            asked = None
            try:
                # The block list's middleware read the generation already (as a rule): the one value a
                # middleware hands the view on the request, as Django's hand it the user.
                generation = (request.lookups_generation if hasattr(request, "lookups_generation")
                              else await lookups.generation())
                caller = await _authenticate(request, generation)
                if endpoint is None:
                    response = await view(request, caller)
                else:
                    asked = _inference_request(request, endpoint, caller, generation)
                    response = await view(request, caller, asked)
            except (errors.ApplicationError, ValidationError, *OUTAGES) as exc:
                failure = inference.refusal(exc)
                response = JsonResponse({"error": _openai_error(failure)}, status=http_status(failure))
                if isinstance(failure, errors.Overloaded):  # a full queue or worker: say when a slot may be free
                    response["Retry-After"] = str(failure.retry_after)
                elif isinstance(exc, OUTAGES):
                    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
            if asked is not None and asked.fallback is not None:  # degradation is never silent
                response[FALLBACK_HEADER] = asked.fallback
            if asked is not None and asked.hold is not None and asked.hold.remaining is not None:
                response[BUDGET_HEADER] = format(asked.hold.remaining.normalize(), "f")  # 10, not 1E+1
            inference.observe(asked, response.status_code, time.monotonic() - started)
            if not getattr(response, "logs_its_end", False):  # a local stream finishes its entry when it ends
                request_log.finish(entry, status=response.status_code)
            return response

        return wrapper

    return decorator


def _inference_request(request, endpoint, caller, generation):
    if request.method != "POST":
        raise errors.MethodNotAllowed("Use POST.")
    body = _json_body(request)
    files = {k: v for k, v in body.items() if hasattr(v, "read")} if endpoint == "image_edit" else None
    return InferenceRequest(endpoint=endpoint, body=body, client_key=caller.client_key, priority=caller.priority,
                            files=files, generation=generation, user_id=caller.user.pk,
                            api_key_id=caller.api_key_id, team_id=caller.team_id,
                            source="v1" if settings.BLAZE_USAGE_ENABLED else "")


def _json_body(request):
    if request.content_type == "multipart/form-data":
        return {**request.POST.dict(), **request.FILES.dict()}
    try:
        body = json.loads(request.body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise errors.InvalidInput(f"The body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise errors.InvalidInput("The body must be a JSON object.")
    return body


def _relayed(served):
    """A remote engine's answer as its host sent it."""
    response = served.response
    return HttpResponse(served.body, status=response.status,
                        content_type=response.headers.get("Content-Type", "application/json"))


def _event_stream(chunks, status=200, content_type="text/event-stream"):
    """A streamed answer that no cache or proxy holds back."""
    response = StreamingHttpResponse(chunks, status=status, content_type=content_type)
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


def _log_relayed(body, chat):
    """A remote host's tokens and answer text in the request log, as far as its body says."""
    try:
        answer = orjson.loads(body)
        choice = answer["choices"][0]
        request_log.note(**request_log.token_counts(answer.get("usage")))
        request_log.note_text(answer=choice["message"]["content"] if chat else choice["text"])
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
        pass  # not an OpenAI-shaped answer: relayed all the same


def _relayed_stream(served):
    response = served.response
    return _event_stream(served.chunks(), response.status, response.headers.get("Content-Type", "text/event-stream"))


def _sse(data):
    return f"data: {json.dumps(data)}\n\n"


def _usage(result):
    """A local engine's result's usage, as OpenAI reports it: `prompt_tokens_details.cached_tokens` are the
    prompt tokens the engine's prefix cache supplied (0 from a runtime that keeps none)."""
    prompt, completion = result.get("prompt_tokens", 0), result.get("completion_tokens", 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": result.get("cached_tokens") or 0}}


def _stream(name, served, data, chat):
    """SSE relay of a local engine's events: chunks per token as they arrive (per choice when n > 1;
    tool calls as `answers.Deltas` shapes them), each choice's finish reason, usage when asked,
    [DONE]. `name`: the model the client asked for."""
    completion_id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
    created, obj = int(time.time()), "chat.completion.chunk" if chat else "text_completion"
    shaper = answers.Deltas(data, chat)

    def chunk(index=0, delta=None, finish=None):
        if chat:
            choice = {"index": index, "delta": delta or {}, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": index, "text": (delta or {}).get("text", ""), "logprobs": None, "finish_reason": finish}
        return {"id": completion_id, "object": obj, "created": created, "model": name, "choices": [choice]}

    entry, tokens, status, counts = request_log.current(), [], 200, {}

    async def events():
        nonlocal status, counts
        if chat:
            for index in range(data["n"]):
                yield _sse(chunk(index, {"role": "assistant", "content": ""}))
        try:
            async for event in inference.events(served):
                if event["type"] == contract.LOADING:  # an SSE comment: clients skip it, a person sees why it waits
                    yield f": {contract.loading_text(event)}\n\n"
                elif event["type"] == contract.TOKEN:
                    tokens.append(event["text"])
                    for index, delta in shaper.token(event.get("index", 0), event["text"]):
                        yield _sse(chunk(index, delta))
                elif event["type"] == contract.DONE:
                    for index, row in enumerate(answers.rows(event["result"])):
                        deltas, finish = shaper.finish(index, row)
                        for at, delta in deltas:
                            yield _sse(chunk(at, delta))
                        yield _sse(chunk(index, finish=finish))
                    usage = _usage(event["result"])
                    counts = request_log.token_counts(usage)
                    if data["include_usage"]:
                        yield _sse({**chunk(), "choices": [], "usage": usage})
        except errors.ApplicationError as exc:  # the 200 went out with the first chunk: the error is an event
            status = http_status(exc)
            yield _sse({"error": _openai_error(exc)})
        finally:
            if entry is not None:
                request_log.note_text(answer="".join(tokens))
                # The usage's count: a character split over two tokens is one chunk. A stream cut before
                # its usage: the chunks relayed.
                request_log.finish(entry, status=status, streamed=True,
                                   **{**counts, "tokens": counts.get("tokens") or len(tokens)})
        yield "data: [DONE]\n\n"

    response = _event_stream(events())
    response.logs_its_end = entry is not None
    return response


def _model_list():
    engines = [
        {"id": e.name, "object": "model", "created": int(e.created_at.timestamp()), "owned_by": "blaze", "kind": e.kind}
        for e in Engine.objects.filter(enabled=True).order_by("name")
    ]
    routes = [
        {"id": r.name, "object": "model", "created": int(r.created_at.timestamp()), "owned_by": "blaze",
         "kind": next((t.engine.kind for t in r.targets.all()), None), "route": True}
        for r in Route.objects.filter(enabled=True).prefetch_related("targets__engine")
    ]
    # An adapter answers to its own name (and to base:adapter, not listed twice); `parent` is its base.
    adapters = [
        {"id": a.name, "object": "model", "created": int(a.created_at.timestamp()), "owned_by": "blaze",
         "kind": a.engine.kind, "parent": a.engine.name, "adapter": True}
        for a in selectors.adapter_list(served=True)
    ]
    named = {route["id"] for route in routes}  # a route hides the engine (or adapter) of its name
    return sorted([*routes, *(m for m in [*engines, *adapters] if m["id"] not in named)], key=lambda model: model["id"])


@v1_endpoint()
async def models(request, caller):
    return JsonResponse({"object": "list", "data": await sync_to_async(_model_list)()})


async def _generation(asked, chat):
    await inference.prepare(asked)
    plan, data = asked.plan, asked.data
    if data.get("user"):
        request_log.note(user=data["user"])  # OpenAI's end-user id: kept with the request, as its abuse log does
    asked.stream = data["stream"]
    served = await inference.serve(asked)
    if served.response is not None:
        if data["stream"] and served.response.status < 300:
            return _relayed_stream(served)
        _log_relayed(served.body, chat)
        return _relayed(served)
    if data["stream"]:
        return _stream(plan.name, served, data, chat=chat)
    result, usage = served.result, _usage(served.result)
    request_log.note(**request_log.token_counts(usage))
    request_log.note_text(answer=answers.rows(result)[0]["text"])
    return JsonResponse({
        "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()), "model": plan.name, "choices": answers.choices(result, data, chat),
        "usage": usage,
    })


@v1_endpoint("chat")
async def chat_completions(request, caller, asked):
    return await _generation(asked, chat=True)


@v1_endpoint("completion")
async def completions(request, caller, asked):
    return await _generation(asked, chat=False)


@v1_endpoint("embedding")
async def embeddings(request, caller, asked):
    await inference.prepare(asked)
    plan, data = asked.plan, asked.data
    served = await inference.serve(asked)
    if served.response is not None:
        return _relayed(served)
    result = served.result

    def encode(vector):
        if data["encoding_format"] == "base64":
            return base64.b64encode(numpy.asarray(vector, dtype="<f4").tobytes()).decode()
        return vector

    # orjson: thousands of floats, which the standard json module formats several times slower.
    return HttpResponse(orjson.dumps({
        "object": "list", "model": plan.name,
        "data": [{"object": "embedding", "index": i, "embedding": encode(v)}
                 for i, v in enumerate(result["embeddings"])],
        "usage": {"prompt_tokens": result["prompt_tokens"], "total_tokens": result["prompt_tokens"]},
    }), content_type="application/json")


async def _images(request, caller, asked):
    await inference.prepare(asked)
    plan, data = asked.plan, asked.data
    served = await inference.serve(asked)
    if served.response is not None:
        return _relayed(served)
    result = served.result
    pngs = [base64.b64decode(image) for image in result["images"]]
    urls = await sync_to_async(services.store_images)(user=caller.user, engine_name=plan.name,
                                                       payload=data["payload"], seed=result["seed"], pngs=pngs)
    if data["response_format"] == "url":
        items = [{"url": request.build_absolute_uri(url)} for url in urls]
    else:
        items = [{"b64_json": image} for image in result["images"]]
    return JsonResponse({"created": int(time.time()), "data": items, "seed": result["seed"]})


@v1_endpoint("image")
async def image_generations(request, caller, asked):
    return await _images(request, caller, asked)


@v1_endpoint("image_edit")
async def image_edits(request, caller, asked):
    return await _images(request, caller, asked)
