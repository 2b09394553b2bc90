"""Active health checks of local route targets: a canary, the smallest real request, sent through a
worker like any other (one token of an LLM, one short text for an embedder).

Only targets whose model is already in a live worker's cache are checked: a check must never make a
worker load (and so evict) a model. Diffusion engines get no canary — a denoising run is not small —
so their health comes from real traffic and the breaker.
"""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings

from engines import contract, heartbeats
from engines.models import Engine, RouteTarget
from engines.serving import dispatch
from engines.serving.resilience.health import HealthMonitor, check_once
from engines.serving.router import resilience_id_of

# Not whole payloads: the LLM's leaves out LlmPayload fields that the runtimes read with .get().
CANARIES: dict[str, Any] = {
    Engine.Kind.LLM: {"prompt": "Hi", "messages": None, "max_tokens": 1, "temperature": 0.0, "top_p": 1.0,
                      "stop": [], "seed": 0},
    Engine.Kind.EMBEDDING: {"input": ["ok"]},
}


def canary_targets() -> list[tuple[str, Engine, str]]:
    """[(target id, engine, worker id)] for enabled local targets of enabled routes with a canary, each
    once, on a live worker that holds the model (the pinned one, else any)."""
    holding: dict[str, list[str]] = {}  # engine name → the live workers that hold it
    for beat in heartbeats.live_workers():
        if not beat["lost"]:
            for entry in beat["cache"]:
                holding.setdefault(entry["engine"], []).append(beat["id"])
    found: dict[str, tuple[Engine, str]] = {}
    targets = RouteTarget.objects.filter(
        enabled=True, route__enabled=True, engine__enabled=True, engine__backend=Engine.Backend.LOCAL,
        engine__kind__in=list(CANARIES),
    ).select_related("engine")
    for target in targets:
        workers = holding.get(target.engine.name, [])
        if target.worker:
            worker = target.worker if target.worker in workers else None
        else:
            worker = workers[0] if workers else None
        if worker is not None:
            found.setdefault(resilience_id_of(target), (target.engine, worker))
    return [(name, engine, worker) for name, (engine, worker) in found.items()]


def canary(engine: Engine, worker: str) -> Callable[[], Awaitable[None]]:
    """A probe for check_once: the engine's canary on that worker; raises when it does not answer."""

    async def probe() -> None:
        async for event in dispatch.run(engine, CANARIES[engine.kind], worker_id=worker,
                                        timeout=settings.BLAZE_HEALTH_CHECK_TIMEOUT):
            if event["type"] == contract.ERROR:
                raise contract.error_from(event)
            if event["type"] == contract.DONE:
                return
        raise RuntimeError("The worker ended the canary without a result.")

    return probe


async def check_local_targets() -> list[tuple[str, dict[str, Any]]]:
    """One canary per checkable local target, concurrently: [(target id, check result)]."""
    targets = await sync_to_async(canary_targets)()
    results = await asyncio.gather(*(
        check_once(HealthMonitor(name), canary(engine, worker)) for name, engine, worker in targets
    ))
    return [(name, result) for (name, _, _), result in zip(targets, results)]
