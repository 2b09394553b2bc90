"""Blaze hosts simulated with processes on this machine, for the cluster's process tests: each process
with the BLAZE_HOST_NAME and BLAZE_VAR_DIR of the host it stands for, so that nothing reaches it but
through Redis and the database, as on separate machines.

A `Cluster` is an installation of its own on this run's Redis and database: its own Redis prefix,
which the test process takes for as long as the cluster runs, so that no process of the test session
(its daphne, worker or live feed) serves, feeds or is counted with it."""

import concurrent.futures
import contextlib
import itertools
import threading
import uuid

import httpx
from django.conf import settings
from django.test.utils import override_settings

from core import shared_state
from tests.reliability.test_worker_kill import post, stream
from tests.servers import start_daphne, start_live_feed, start_worker


class Cluster:
    """`with Cluster(log_dir) as cluster:` → start hosts' processes with `web`, `worker` and `feed` (or
    several at once with `start`); every one is stopped, and the cluster's keys deleted, on leaving.
    `processes`: {(host, role): Process}."""

    def __init__(self, log_dir):
        self.log_dir, self.processes = log_dir, {}
        self.prefix = f"{settings.REDIS_PREFIX}-cluster-{uuid.uuid4().hex[:6]}"
        self._settings = override_settings(REDIS_PREFIX=self.prefix)

    def __enter__(self):
        self._settings.enable()
        return self

    def __exit__(self, *exc_info):
        for process in self.processes.values():
            process.stop()  # a killed one is stopped already
        self._settings.disable()
        client = shared_state.client()
        keys = list(client.scan_iter(f"{self.prefix}:*", count=1000))
        if keys:
            client.delete(*keys)

    def env(self, host, role):
        """What a process of `host` is started with: the host's name, a var directory of its own, and
        what a deployment gives every process alike (the signing key, the cluster's Redis prefix)."""
        var_dir = self.log_dir / host / role
        var_dir.mkdir(parents=True, exist_ok=True)
        return {"BLAZE_HOST_NAME": host, "BLAZE_VAR_DIR": str(var_dir), "SECRET_KEY": settings.SECRET_KEY,
                "BLAZE_REDIS_PREFIX": self.prefix}

    def web(self, host, **env):
        """A daphne of `host`; its base URL is `.url`."""
        return self._started(host, "web", start_daphne, **env)

    def worker(self, host, threads=8, **env):
        """`host`'s Celery worker (engine host), named `<host>@test` (`.hostname`)."""
        return self._started(host, "worker", start_worker, host, threads, **env)

    def feed(self, host, interval=0.5, **env):
        """The live feed's producer, on `host`."""
        return self._started(host, "feed", start_live_feed, interval, **env)

    def start(self, *starts):
        """Run several of `web`, `worker`, `feed` (as `lambda: cluster.worker("host-a")`) at once: the
        processes start side by side rather than one after the other."""
        with concurrent.futures.ThreadPoolExecutor(len(starts)) as pool:
            return [future.result() for future in [pool.submit(start) for start in starts]]

    def _started(self, host, role, start, *args, **env):
        own = self.env(host, role)  # the process's log goes to its var directory
        process = start(self.log_dir / host / role, *args, **own, **env)
        self.processes[(host, role)] = process
        return process

    def kill_host(self, host):
        """SIGKILL every process of `host`, as when the machine goes away."""
        for (name, _), process in self.processes.items():
            if name == host and process.alive():
                process.kill()


HOSTS = ("host-a", "host-b", "host-c")


def start_three_hosts(cluster, **feed_env):
    """host-a and host-b: a daphne and a worker each; host-c: a worker and the live feed (`feed_env`: its
    settings). Returns the two daphnes."""
    web_a, web_b, *_ = cluster.start(lambda: cluster.web("host-a"), lambda: cluster.web("host-b"),
                                     *[lambda host=host: cluster.worker(host) for host in HOSTS],
                                     lambda: cluster.feed("host-c", **feed_env))
    return web_a, web_b


def load_each_host_s_engine(base, token):
    """Each host's worker loads its own engine, `tiny-<host>`, through the operator API (`token`: an
    operator's DRF token), side by side: requests for it go to that host."""

    def load(host):
        return httpx.post(f"{base}/api/workers/{host}@test/cache/", json={"action": "load", "engine": f"tiny-{host}"},
                          headers={"Authorization": f"Token {token}"}, timeout=60)

    with concurrent.futures.ThreadPoolExecutor(len(HOSTS)) as pool:
        for loaded in pool.map(load, HOSTS):
            assert loaded.status_code == 200, loaded.text


def chat(model, tokens, seed=0):
    """A chat that runs its `tokens` tokens (never the end-of-text token)."""
    return {"model": model, "max_tokens": tokens, "seed": seed, "temperature": 0.8, "logit_bias": {"0": -100},
            "messages": [{"role": "user", "content": f"the cat sat on mat {seed}"}]}


@contextlib.contextmanager
def steady_traffic(base, key, clients=3, tokens=12, pause=0.0):
    """Chats and streams to every host's engine in turn, from `clients` threads, each sending its next
    `pause` s after its last is answered, until the block ends; yields the outcomes so far, one per
    request: "answered", or what went wrong."""
    stop, outcomes = threading.Event(), []

    def client(turn):
        for n in itertools.count():
            if stop.is_set():
                return
            body = chat(f"tiny-{HOSTS[(turn + n) % len(HOSTS)]}", tokens, seed=n)
            try:
                if n % 2:
                    stream(base, key, body, [])
                else:
                    post(base, key, "chat/completions", body)
                outcomes.append("answered")
            except Exception as exc:  # noqa: BLE001 - a request lost, counted as such
                outcomes.append(repr(exc))
            stop.wait(pause)

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        running = [pool.submit(client, turn) for turn in range(clients)]
        try:
            yield outcomes
        finally:
            stop.set()
        for future in running:
            future.result(timeout=120)
