"""Celery tasks: thin wrappers that decode arguments and call the worker's EngineHost."""


from typing import Any

from celery import shared_task
from celery.signals import celeryd_after_setup, worker_shutdown

from engines import contract
from engines.worker import adapters, catalog
from engines.worker.host import EngineHost
from telemetry import cluster

HOST: EngineHost | None = None


def _host() -> EngineHost:
    if HOST is None:  # set as the worker starts, before it consumes anything
        raise RuntimeError("This process is not an engine host: tasks run in a worker (celery -A blaze_site worker).")
    return HOST


@celeryd_after_setup.connect
def _start_host(sender: str, instance: Any, **kwargs: Any) -> None:
    """Before the worker consumes anything: become an engine host and listen on a queue of our own
    (so the web process can choose the worker) besides the shared and broadcast queues."""
    global HOST
    instance.app.amqp.queues.select_add(contract.worker_queue(sender))
    HOST = EngineHost(sender, threads=instance.concurrency)
    HOST.start()
    cluster.start("worker")


@worker_shutdown.connect
def _stop_host(sender: Any, **kwargs: Any) -> None:
    if HOST is not None:
        HOST.stop()


@shared_task(name=contract.INFER_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def infer(request_id: str, spec: contract.EngineSpecDict, payload: contract.InferPayload) -> None:
    _host().infer(request_id, spec, payload)


@shared_task(name=contract.CACHE_LOAD_TASK)
def cache_load(spec: contract.EngineSpecDict) -> dict[str, Any]:
    return _host().load(spec)


@shared_task(name=contract.CACHE_UNLOAD_TASK)
def cache_unload(engine: str) -> bool:
    return _host().cache.unload(engine)


@shared_task(name=contract.CACHE_EVICT_TASK)
def cache_evict() -> str | None:
    """Evict the least recently used model; returns its name, or None when the cache is empty."""
    snapshot = _host().cache.snapshot()
    if not snapshot:
        return None
    victim = snapshot[-1]["engine"]
    _host().cache.unload(victim, reason="evicted")
    return victim


@shared_task(name=contract.UNLOAD_EVERYWHERE_TASK, ignore_result=True)
def unload_everywhere(engine: str) -> bool:
    """Sent on the broadcast queue: every worker drops the engine (it was disabled or deleted)."""
    return _host().cache.unload(engine)


@shared_task(name=contract.INSPECT_MODEL_TASK)
def inspect_model(model: str) -> dict[str, Any]:
    """What this worker finds at `model` (a path, or a hub id in its Hugging Face cache), reading
    configs and headers only: the facts, or {"error": why not}."""
    return _host().inspect(model)


@shared_task(name=contract.DOWNLOAD_MODEL_TASK, ignore_result=True)
def download_model(download_id: str) -> None:
    """Fetch a model from a Hugging Face hub into this worker's models directory; returns at once (the
    download runs in a thread, its progress in its Redis record: engines/downloads.py)."""
    _host().download(download_id)


@shared_task(name=contract.INSPECT_ADAPTER_TASK)
def inspect_adapter(path: str, model: str, runtime: str) -> dict[str, Any]:
    """What this worker finds at the adapter `path`, checked against the base `model` run by `runtime`:
    its facts, or {"error": why it cannot run on that model}."""
    try:
        return dict(adapters.describe(path, model, runtime))
    except catalog.CatalogError as exc:
        return {"error": str(exc)}
