"""Remote engines: OpenAI-compatible hosts (vLLM, TGI, Ollama, another Blaze) called from the web
process through the pooled client, with retries within the request's deadline and the host's
circuit breaker, under the engine's outbound caps (`max_rps`, `max_concurrency`: `resilience.outbound`).
The client's body goes upstream as sent (extensions included), `model` renamed to the upstream's name;
answers come back as they are, streams chunk by chunk."""

from typing import TYPE_CHECKING, Any

from engines.serving.resilience import resilience_id
from engines.serving.resilience.breaker import CircuitBreaker, Permit
from engines.serving.resilience.http import request_owing
from engines.serving.resilience.outbound import WAIT_BEFORE_FAILOVER_SECONDS, OutboundLimit

if TYPE_CHECKING:
    import aiohttp
    from django.core.files.uploadedfile import UploadedFile

    from engines.models import Engine

PATHS = {
    "chat": "/chat/completions", "completion": "/completions", "embedding": "/embeddings",
    "image": "/images/generations", "image_edit": "/images/edits",
}


def breaker_for(engine: "Engine") -> CircuitBreaker:
    return CircuitBreaker(resilience_id(engine.name))


async def forward(engine: "Engine", endpoint: str, body: dict[str, Any], *, deadline: float, stream: bool = False,
                  attempts: int | None = None, files: "dict[str, UploadedFile] | None" = None,
                  permit: Permit | None = None) -> "tuple[aiohttp.ClientResponse, Permit | None]":
    """POST the body to the engine's host; returns (the aiohttp.ClientResponse, the breaker permit whose
    success the caller owes, or None: see `resilience.http.request_owing`). The response's body is read
    (only its headers when `stream`: the caller then reads and releases it). `files`
    ({field: UploadedFile}): send a multipart form (image edits) instead of JSON. `attempts`: at most
    that many tries (default: the retry policy). `permit`: the host breaker's, granted already, for the
    first try. Over the engine's outbound caps the request waits its turn, up to its deadline, but only
    WAIT_BEFORE_FAILOVER_SECONDS as a try of a route with other targets left (`attempts=1`, as
    `failover` sends those): another target may answer at once. Raises UpstreamError for a 5xx,
    UpstreamTimeout, UpstreamUnreachable, BreakerOpen, errors.Overloaded (a cap's wait would be longer)."""
    headers = {"Authorization": f"Bearer {engine.api_key}"} if engine.api_key else {}
    body = {**body, "model": engine.model or engine.name}
    sent: dict[str, Any]  # request_owing's `json` or `form`
    if files:
        fields = {name: value for name, value in body.items() if name not in files}
        sent = {"form": (fields, {name: (f.name, _read(f), f.content_type) for name, f in files.items()})}
    else:
        sent = {"json": body}
    return await request_owing(
        "POST", engine.base_url.rstrip("/") + PATHS[endpoint], headers=headers, deadline=deadline,
        stream=stream, attempts=attempts, breaker=breaker_for(engine), permit=permit, limit=OutboundLimit.of(engine),
        patience=WAIT_BEFORE_FAILOVER_SECONDS if attempts == 1 else None, **sent,
    )


def _read(upload: "UploadedFile") -> bytes:
    upload.seek(0)
    return upload.read()
