"""The OpenAI-compatible inference API under /v1: what the official `openai` client expects.

Plain async Django views (DRF has no streaming responses): JSON in, JSON or server-sent events
out, errors in OpenAI's shape {"error": {"message", "type", "param", "code"}}. The `model` names a
route or an engine; `serving.plan` resolves it and `serving.failover` finds the target that answers.
A local engine's result is shaped here; a remote engine's answer is relayed as its host sent it
(streams chunk by chunk).
"""

import base64
import json
import time
import uuid
from functools import partial, wraps

import numpy
import orjson
from asgiref.sync import sync_to_async
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions as drf_exceptions
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import ValidationError
from rest_framework_simplejwt.authentication import JWTAuthentication

from accounts.audit import client_ip
from accounts.authentication import bearer_api_key, check_key, find_key, mark_used, stale_last_used
from accounts.models import ApiKey
from blaze_site import errors, logs, lookups
from blaze_site.exceptions import OUTAGES, RETRY_AFTER_SECONDS, flatten, http_status, outage
from blaze_site.views import openai_error
from engines import contract, services
from engines.models import Engine, Route
from engines.openai import answers
from engines.openai.protocol import REQUEST_SERIALIZERS
from engines.serving import failover
from engines.serving import plan as plans
from engines.serving.router import client_key
from monitoring import metrics, request_log

BLAZE_FIELDS = ("priority",)  # Blaze's own request fields: a remote host is not sent them


def error_response(status, message, param=None, code=None):
    return JsonResponse({"error": openai_error(status, message, param, code)}, status=status)


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


async def _authenticate(request, generation):
    """API key (scope `inference`, looked up through `lookups`), DRF token or JWT → (user, the key
    ip_hash keeps sticky); raises an ApplicationError."""
    raw, api_key_id = bearer_api_key(request), None
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
        user, api_key_id = key.user, key.pk
        request_log.note(client=str(key))
    else:
        user, may_use, priority = await sync_to_async(_token_user)(request)
        if user is None:
            raise errors.NotAuthenticated("Send an API key: Authorization: Bearer blz_…", code="missing_api_key")
        request_log.note(client=f"user {user.username}")
    if not may_use:
        raise errors.PermissionDenied("Your account has no role that may use engines.")
    return user, client_key(api_key_id=api_key_id, ip=client_ip(request)), priority


FALLBACK_HEADER = "X-Blaze-Fallback"  # on an answer a route's fallback gave: that fallback's name


def v1_endpoint(view):
    """Authenticate; answer ApplicationErrors and validation errors in OpenAI's shape; mark an answer
    a route's fallback gave (FALLBACK_HEADER)."""

    @csrf_exempt
    @wraps(view)
    async def wrapper(request, *args, **kwargs):
        started = time.monotonic()
        entry = request_log.begin(request_id=logs.request_id.get(), endpoint=request.path)
        try:
            if not hasattr(request, "lookups_generation"):  # read by the block list's middleware, as a rule
                request.lookups_generation = await lookups.generation()
            request.v1_user, request.v1_client, request.v1_priority = await _authenticate(
                request, request.lookups_generation)
            response = await view(request, *args, **kwargs)
        except errors.ApplicationError as exc:
            response = JsonResponse({"error": _openai_error(exc)}, status=http_status(exc))
            if isinstance(exc, errors.Overloaded):  # a full queue or worker: say when a slot may be free
                response["Retry-After"] = str(exc.retry_after)
        except OUTAGES as exc:
            response = JsonResponse({"error": _openai_error(outage(exc))}, status=503,
                                    headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        except ValidationError as exc:
            fields = flatten(exc.detail)
            param, messages = next(iter(fields.items()))
            response = error_response(400, f"{param}: {messages[0]}", param=param)
        fallback = getattr(request, "v1_fallback", None)
        if fallback is not None:  # degradation is never silent: JSON or stream, local or remote
            response[FALLBACK_HEADER] = fallback
        model = getattr(request, "v1_model", None)  # set once the name resolved: junk names make no series
        if model is not None:
            metrics.observe_model_request(model, response.status_code, time.monotonic() - started)
        if not getattr(response, "logs_its_end", False):  # a local stream finishes its entry when it ends
            request_log.finish(entry, status=response.status_code)
        return response

    return wrapper



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


async def _validated(request, endpoint):
    """(plan, validated data, the client's body): the body checked against the caps of the engine the
    model names (a route: its first enabled target's)."""
    if request.method != "POST":
        raise errors.MethodNotAllowed("Use POST.")
    body = _json_body(request)
    serializer_class, kind = REQUEST_SERIALIZERS[endpoint]
    name = body.get("model")
    plan = await lookups.cached("plan", (name, kind) if isinstance(name, str) else None, request.lookups_generation,
                                partial(plans.resolve, name, kind))
    request.v1_model = plan.name
    request_log.note(model=plan.name, route=plan.route.name if plan.route else None,
                     keep_prompts=bool(plan.route and plan.route.keep_prompts))
    serializer = serializer_class(data=body, context={"engine": plan.engine, "priority": request.v1_priority})
    serializer.is_valid(raise_exception=True)
    request_log.note_prompt(serializer.validated_data["payload"])
    return plan, serializer.validated_data, body


async def _serve(request, endpoint, plan, data, body, stream=False):
    files = {k: v for k, v in body.items() if hasattr(v, "read")} if endpoint == "image_edit" else None
    served = await failover.serve(plan, endpoint, data["payload"],
                                  {k: v for k, v in body.items() if k not in (files or {}) and k not in BLAZE_FIELDS},
                                  stream=stream, client_key=request.v1_client, files=files)
    request.v1_fallback = served.fallback
    return served


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
            async for event in served.events:
                if event["type"] == contract.TOKEN:
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
                elif event["type"] == contract.ERROR:
                    status = http_status(contract.error_from(event))
                    yield _sse({"error": _openai_error(contract.error_from(event))})
        finally:
            await served.events.aclose()
            if entry is not None:
                request_log.note_text(answer="".join(tokens))
                request_log.finish(entry, status=status, streamed=True, **{**counts, "tokens": len(tokens)})
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
    named = {route["id"] for route in routes}  # a route hides the engine of its name
    return sorted([*routes, *(e for e in engines if e["id"] not in named)], key=lambda model: model["id"])


@v1_endpoint
async def models(request):
    return JsonResponse({"object": "list", "data": await sync_to_async(_model_list)()})


async def _generation(request, endpoint, chat):
    plan, data, body = await _validated(request, endpoint)
    if data.get("user"):
        request_log.note(user=data["user"])  # OpenAI's end-user id: kept with the request, as its abuse log does
    served = await _serve(request, endpoint, plan, data, body, stream=data["stream"])
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


@v1_endpoint
async def chat_completions(request):
    return await _generation(request, "chat", chat=True)


@v1_endpoint
async def completions(request):
    return await _generation(request, "completion", chat=False)


@v1_endpoint
async def embeddings(request):
    plan, data, body = await _validated(request, "embedding")
    served = await _serve(request, "embedding", plan, data, body)
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


async def _images(request, endpoint):
    plan, data, body = await _validated(request, endpoint)
    served = await _serve(request, endpoint, plan, data, body)
    if served.response is not None:
        return _relayed(served)
    result = served.result
    pngs = [base64.b64decode(image) for image in result["images"]]
    urls = await sync_to_async(services.store_images)(user=request.v1_user, engine_name=plan.name,
                                                       payload=data["payload"], seed=result["seed"], pngs=pngs)
    if data["response_format"] == "url":
        items = [{"url": request.build_absolute_uri(url)} for url in urls]
    else:
        items = [{"b64_json": image} for image in result["images"]]
    return JsonResponse({"created": int(time.time()), "data": items, "seed": result["seed"]})


@v1_endpoint
async def image_generations(request):
    return await _images(request, "image")


@v1_endpoint
async def image_edits(request):
    return await _images(request, "image_edit")
