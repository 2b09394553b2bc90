"""The OpenAI-compatible inference API under /v1: what the official `openai` client expects.

Plain async Django views (DRF has no streaming responses): JSON in, JSON or server-sent events
out, errors in OpenAI's shape {"error": {"message", "type", "param", "code"}}.
"""

import base64
import json
import time
import uuid
from functools import wraps

from asgiref.sync import sync_to_async
from django.http import JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions as drf_exceptions
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import ValidationError
from rest_framework_simplejwt.authentication import JWTAuthentication

from accounts.authentication import ApiKeyAuthentication
from accounts.models import ApiKey
from blaze_site.exceptions import flatten
from blaze_site.views import OPENAI_ERROR_TYPES

from . import dispatch
from .models import Engine
from .openai_serializers import REQUEST_SERIALIZERS


class ApiError(Exception):
    def __init__(self, status, message, param=None, code=None):
        super().__init__(message)
        self.status, self.param, self.code = status, param, code


def error_response(status, message, param=None, code=None):
    body = {"error": {"message": message, "type": OPENAI_ERROR_TYPES.get(status, "server_error"), "param": param, "code": code}}
    return JsonResponse(body, status=status)


def _authenticate(request):
    """API key (scope `inference`), DRF token or JWT → the user; raises ApiError."""
    for authenticator in (ApiKeyAuthentication(), TokenAuthentication(), JWTAuthentication()):
        try:
            result = authenticator.authenticate(request)
        except drf_exceptions.AuthenticationFailed as exc:
            raise ApiError(401, str(exc.detail), code="invalid_api_key") from exc
        if result is None:
            continue
        user, credential = result
        if isinstance(credential, ApiKey) and "inference" not in credential.scopes:
            raise ApiError(403, "This API key lacks the 'inference' scope.", code="insufficient_scope")
        if not user.has_perm("engines.view_engine"):
            raise ApiError(403, "Your account has no role that may use engines.")
        return user
    raise ApiError(401, "Send an API key: Authorization: Bearer blz_…", code="missing_api_key")


def v1_endpoint(view):
    """Authenticate, turn ApiError/validation/dispatch errors into OpenAI-shaped responses."""

    @csrf_exempt
    @wraps(view)
    async def wrapper(request, *args, **kwargs):
        try:
            request.v1_user = await sync_to_async(_authenticate)(request)
            return await view(request, *args, **kwargs)
        except ApiError as exc:
            return error_response(exc.status, str(exc), exc.param, exc.code)
        except ValidationError as exc:
            fields = flatten(exc.detail)
            param, messages = next(iter(fields.items()))
            return error_response(400, f"{param}: {messages[0]}", param=param)
        except dispatch.DispatchError as exc:
            return error_response(exc.status, str(exc), exc.param)

    return wrapper


def _json_body(request):
    if request.content_type == "multipart/form-data":
        return {**request.POST.dict(), **request.FILES.dict()}
    try:
        body = json.loads(request.body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"The body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "The body must be a JSON object.")
    return body


def _engine_for(name, kind):
    if not isinstance(name, str) or not name:
        raise ApiError(400, "model: This field is required.", param="model")
    engine = Engine.objects.filter(name=name).first()
    if engine is None or not engine.enabled:
        raise ApiError(404, f"The model '{name}' does not exist or is disabled.", param="model", code="model_not_found")
    if engine.kind != kind:
        raise ApiError(400, f"The model '{name}' is a {engine.kind} engine, not {kind}.", param="model")
    if engine.backend != Engine.Backend.LOCAL:
        raise ApiError(501, f"The model '{name}' is a remote engine; remote serving arrives with the router.", param="model")
    return engine


async def _validated(request, endpoint):
    if request.method != "POST":
        raise ApiError(405, "Use POST.")
    body = _json_body(request)
    serializer_class, kind = REQUEST_SERIALIZERS[endpoint]
    engine = await sync_to_async(_engine_for)(body.get("model"), kind)
    serializer = serializer_class(data=body, context={"engine": engine})
    serializer.is_valid(raise_exception=True)
    return engine, serializer.validated_data


async def _result(engine, payload):
    async for event in dispatch.run(engine, payload):
        if event["type"] == "done":
            return event["result"]
        if event["type"] == "error":
            raise ApiError(event["status"], event["message"], event.get("param"))
    raise ApiError(500, "The worker ended the request without a result.")


def _sse(data):
    return f"data: {json.dumps(data)}\n\n"


def _usage(result):
    prompt, completion = result.get("prompt_tokens", 0), result.get("completion_tokens", 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _stream(engine, data, chat):
    """SSE relay: a chunk per token as it arrives, the finish reason, usage when asked, [DONE]."""
    completion_id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
    created, obj = int(time.time()), "chat.completion.chunk" if chat else "text_completion"

    def chunk(text=None, finish=None, role=False):
        if chat:
            delta = {"role": "assistant", "content": ""} if role else ({"content": text} if text is not None else {})
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
        return {"id": completion_id, "object": obj, "created": created, "model": engine.name, "choices": [choice]}

    async def events():
        if chat:
            yield _sse(chunk(role=True))
        try:
            async for event in dispatch.run(engine, {**data["payload"], "stream": True}):
                if event["type"] == "token":
                    yield _sse(chunk(text=event["text"]))
                elif event["type"] == "done":
                    yield _sse(chunk(finish=event["result"]["finish_reason"]))
                    if data["include_usage"]:
                        yield _sse({**chunk(), "choices": [], "usage": _usage(event["result"])})
                elif event["type"] == "error":
                    yield _sse({"error": {"message": event["message"], "type": OPENAI_ERROR_TYPES.get(event["status"], "server_error"),
                                          "param": event.get("param"), "code": None}})
        except dispatch.DispatchError as exc:
            yield _sse({"error": {"message": str(exc), "type": "server_error", "param": None, "code": None}})
        yield "data: [DONE]\n\n"

    response = StreamingHttpResponse(events(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


@v1_endpoint
async def models(request):
    engines = await sync_to_async(list)(Engine.objects.filter(enabled=True).order_by("name"))
    return JsonResponse({"object": "list", "data": [
        {"id": e.name, "object": "model", "created": int(e.created_at.timestamp()), "owned_by": "blaze", "kind": e.kind}
        for e in engines
    ]})


@v1_endpoint
async def chat_completions(request):
    engine, data = await _validated(request, "chat")
    if data["stream"]:
        return _stream(engine, data, chat=True)
    result = await _result(engine, data["payload"])
    return JsonResponse({
        "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
        "model": engine.name,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": result["text"]},
                     "logprobs": None, "finish_reason": result["finish_reason"]}],
        "usage": _usage(result),
    })


@v1_endpoint
async def completions(request):
    engine, data = await _validated(request, "completion")
    if data["stream"]:
        return _stream(engine, data, chat=False)
    result = await _result(engine, data["payload"])
    return JsonResponse({
        "id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
        "model": engine.name,
        "choices": [{"index": 0, "text": result["text"], "logprobs": None, "finish_reason": result["finish_reason"]}],
        "usage": _usage(result),
    })


@v1_endpoint
async def embeddings(request):
    engine, data = await _validated(request, "embedding")
    result = await _result(engine, data["payload"])

    def encode(vector):
        if data["encoding_format"] == "base64":
            import numpy

            return base64.b64encode(numpy.asarray(vector, dtype="<f4").tobytes()).decode()
        return vector

    return JsonResponse({
        "object": "list", "model": engine.name,
        "data": [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(result["embeddings"])],
        "usage": {"prompt_tokens": result["prompt_tokens"], "total_tokens": result["prompt_tokens"]},
    })


async def _images(request, endpoint):
    from .images import store_images

    engine, data = await _validated(request, endpoint)
    result = await _result(engine, data["payload"])
    pngs = [base64.b64decode(image) for image in result["images"]]
    urls = await sync_to_async(store_images)(request.v1_user, engine.name, data["payload"], result["seed"], pngs)
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
