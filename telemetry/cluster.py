"""Metrics of the whole cluster, through Redis: every Blaze process publishes its own samples there,
and whatever needs them all (the live feed, `/metrics/prometheus`) reads every live process's.

Each process (a daphne, a Celery worker, the live feed) runs `start(role)` once: a daemon thread
that every BLAZE_METRICS_PUSH_SECONDS writes the process's own registry (prometheus-client keeps one
per process) as one JSON value under its own key, with an expiry of BLAZE_WORKER_LOST_SECONDS, and
stamps it in an index. A process that stops publishing drops out when its key lapses: its series end,
and no reader waits for it. Pushing rather than scraping each process: processes need no port, no
address and no discovery beyond Redis, which every one of them already reaches; measured in
docs/benchmarks.md ("Cluster metrics").
"""

import atexit
import logging
import os
import socket
import threading
import time

import orjson
from django.conf import settings
from prometheus_client import REGISTRY, Metric

from core import shared_state

log = logging.getLogger(__name__)

_started = threading.Lock()
_publishing = threading.Lock()  # a publish and the withdrawal at exit never interleave
_withdrawn = threading.Event()  # set at exit: nothing is published after the withdrawal
_publisher = None
_role = "process"  # what this process is, once `start` has named it


def host_name():
    """The name this machine (or pod) goes by in the cluster's series: BLAZE_HOST_NAME, else its hostname."""
    return settings.BLAZE_HOST_NAME or socket.gethostname()


def snapshot(role, registry=REGISTRY):
    """This process's samples as one JSON-able dict: its identity and [[name, type, help, samples]]."""
    families = []
    for family in registry.collect():
        samples = [[s.name, s.labels, s.value] for s in family.samples if not s.name.endswith("_created")]
        if samples:
            families.append([family.name, family.type, family.documentation, samples])
    return {"host": host_name(), "process": f"{role}:{os.getpid()}", "t": time.time(), "families": families}


def publish(role, registry=REGISTRY):
    """Write this process's snapshot to Redis (one round trip)."""
    data = snapshot(role, registry)
    member = _member(data)
    pipe = shared_state.client().pipeline(transaction=False)
    pipe.set(shared_state.metrics_process_key(member), orjson.dumps(data),
             px=int(settings.BLAZE_WORKER_LOST_SECONDS * 1000))
    pipe.zadd(shared_state.metrics_processes_key(), {member: data["t"]})
    pipe.execute()


def start(role):
    """Publish this process's metrics every BLAZE_METRICS_PUSH_SECONDS from a daemon thread (once per
    process: later calls do nothing)."""
    global _publisher, _role
    with _started:
        _role = role
        if _publisher is not None and _publisher.is_alive():
            return
        _publisher = threading.Thread(target=_loop, args=(role,), name="metrics-publisher", daemon=True)
        _publisher.start()
        atexit.register(_withdraw, role)


def publish_now():
    """Publish this process's samples at once, if it publishes at all (`start` ran): what readers see
    then includes everything it has counted (tests read the cluster's metrics right after traffic)."""
    if _publisher is not None and _publisher.is_alive():
        with _publishing:
            if not _withdrawn.is_set():
                publish(_role)


def _withdraw(role):
    """A process that ends in order leaves at once (a killed one when its key lapses). The publishing
    thread may be mid-write: the lock lets it finish (a Redis that hangs is given 5 s), and the event
    keeps it from writing the key back afterwards."""
    member = f"{host_name()}/{role}:{os.getpid()}"
    locked = _publishing.acquire(timeout=5)
    _withdrawn.set()
    try:
        redis = shared_state.client()
        redis.delete(shared_state.metrics_process_key(member))
        redis.zrem(shared_state.metrics_processes_key(), member)
    except Exception:  # noqa: BLE001 - Redis may be gone first
        log.debug("metrics: could not withdraw this process", exc_info=True)
    finally:
        if locked:
            _publishing.release()


def _loop(role):
    while not _withdrawn.is_set():
        started = time.monotonic()
        try:
            with _publishing:
                if not _withdrawn.is_set():
                    publish(role)
        except Exception:  # noqa: BLE001 - a Redis blip must not end the publishing
            log.warning("metrics: could not publish this process's samples", exc_info=True)
        time.sleep(max(0.05, settings.BLAZE_METRICS_PUSH_SECONDS - (time.monotonic() - started)))


def _member(data):
    return f"{data['host']}/{data['process']}"


def processes():
    """Every live process's last snapshot (see `snapshot`), this one's read now rather than as it
    last published it. Processes whose key has lapsed leave the index here."""
    own = snapshot(_role)
    redis = shared_state.client()
    index = shared_state.metrics_processes_key()
    redis.zremrangebyscore(index, "-inf", time.time() - settings.BLAZE_WORKER_LOST_SECONDS)
    members = [m for m in redis.zrange(index, 0, -1) if m != _member(own)]
    raws = redis.mget([shared_state.metrics_process_key(m) for m in members]) if members else []
    gone = [m for m, raw in zip(members, raws) if raw is None]
    if gone:
        redis.zrem(index, *gone)
    return [orjson.loads(raw) for raw in raws if raw is not None] + [own]


class ClusterCollector:
    """A prometheus-client collector over `processes()`: every live process's series, each with its
    `host` and `process` labels, one family per metric name; `summed`: added up over the processes
    instead, as one machine's multi-process collector did."""

    def __init__(self, summed=False):
        self.summed = summed

    def collect(self):
        families, values = {}, {}
        for data in processes():
            extra = {} if self.summed else {"host": data["host"], "process": data["process"]}
            for name, kind, documentation, samples in data["families"]:
                if name not in families:
                    families[name] = Metric(name, documentation, kind)
                for sample_name, labels, value in samples:
                    key = (name, sample_name, tuple(sorted({**labels, **extra}.items())))
                    values[key] = values.get(key, 0.0) + value
        for (name, sample_name, labels), value in values.items():
            families[name].add_sample(sample_name, dict(labels), value)
        return list(families.values())
