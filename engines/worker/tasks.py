"""Celery tasks: thin wrappers that decode arguments and call the worker's EngineHost."""

import os

from celery import shared_task
from celery.signals import celeryd_after_setup, worker_shutdown

from engines import contract
from engines.worker.host import EngineHost

HOST = None


@celeryd_after_setup.connect
def _start_host(sender, instance, **kwargs):
    """Before the worker consumes anything: become an engine host and listen on a queue of our own
    (so the web process can choose the worker) besides the shared and broadcast queues."""
    global HOST
    instance.app.amqp.queues.select_add(contract.worker_queue(sender))
    HOST = EngineHost(sender, threads=instance.concurrency)
    HOST.start()


@worker_shutdown.connect
def _stop_host(sender, **kwargs):
    from prometheus_client import multiprocess

    if HOST is not None:
        HOST.stop()
    multiprocess.mark_process_dead(os.getpid())  # its live gauges no longer count


@shared_task(name=contract.INFER_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def infer(request_id, spec, payload):
    HOST.infer(request_id, spec, payload)


@shared_task(name=contract.CACHE_LOAD_TASK)
def cache_load(spec):
    return HOST.load(spec)


@shared_task(name=contract.CACHE_UNLOAD_TASK)
def cache_unload(engine):
    return HOST.cache.unload(engine)


@shared_task(name=contract.CACHE_EVICT_TASK)
def cache_evict():
    """Evict the least recently used model; returns its name, or None when the cache is empty."""
    snapshot = HOST.cache.snapshot()
    if not snapshot:
        return None
    victim = snapshot[-1]["engine"]
    HOST.cache.unload(victim, reason="evicted")
    return victim


@shared_task(name=contract.UNLOAD_EVERYWHERE_TASK, ignore_result=True)
def unload_everywhere(engine):
    """Sent on the broadcast queue: every worker drops the engine (it was disabled or deleted)."""
    return HOST.cache.unload(engine)
