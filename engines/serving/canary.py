"""Active health checks of local route targets: a canary, the smallest real request, sent through a
worker like any other (one token of an LLM, one short text for an embedder).

Only targets whose model is already in a live worker's cache are checked: a check must never make a
worker load (and so evict) a model. Diffusion engines get no canary — a denoising run is not small —
so their health comes from real traffic and the breaker.
"""

import asyncio

from asgiref.sync import sync_to_async
from django.conf import settings

from engines import contract, heartbeats
from engines.models import Engine, RouteTarget
from engines.serving import dispatch
from engines.serving.resilience.health import HealthMonitor, check_once
from engines.serving.router import resilience_id_of

CANARIES = {
    Engine.Kind.LLM: {"prompt": "Hi", "messages": None, "max_tokens": 1, "temperature": 0.0, "top_p": 1.0,
                      "stop": [], "seed": 0},
    Engine.Kind.EMBEDDING: {"input": ["ok"]},
}


def canary_targets():
    """[(target id, engine, worker id)] for enabled local targets of enabled routes with a canary, each
    once, on a live worker that holds the model (the pinned one, else any)."""
    holding = {}
    for worker in heartbeats.live_workers():
        if not worker["lost"]:
            for entry in worker["cache"]:
                holding.setdefault(entry["engine"], []).append(worker["id"])
    found = {}
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


def canary(engine, worker):
    """A probe for check_once: the engine's canary on that worker; raises when it does not answer."""

    async def probe():
        async for event in dispatch.run(engine, CANARIES[engine.kind], worker_id=worker,
                                        timeout=settings.BLAZE_HEALTH_CHECK_TIMEOUT):
            if event["type"] == contract.ERROR:
                raise contract.error_from(event)
            if event["type"] == contract.DONE:
                return
        raise RuntimeError("The worker ended the canary without a result.")

    return probe


async def check_local_targets():
    """One canary per checkable local target, concurrently: [(target id, check result)]."""
    targets = await sync_to_async(canary_targets)()
    results = await asyncio.gather(*(
        check_once(HealthMonitor(name), canary(engine, worker)) for name, engine, worker in targets
    ))
    return [(name, result) for (name, _, _), result in zip(targets, results)]
