"""The one place that knows Redis key names and hands out Redis clients (and runs Lua scripts on them).

Every key starts with settings.REDIS_PREFIX, so several Blaze installations (or test runs) can share
one Redis. REDIS_URL names one Redis (`redis://`, `rediss://`, `unix://`) or a Sentinel set
(`redis+sentinel://`, `SentinelUrl`): then every connection asks the sentinels where the master is
as it opens, so a failover is followed without a restart (docs/decisions.md, "Redis Sentinel").
"""

import asyncio
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Literal, overload
from urllib.parse import quote, unquote, urlsplit

import hiredis
import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

SENTINEL_SCHEME = "redis+sentinel"
# Every connection to a Sentinel set's master: a master that dies or hangs mid-failover fails the
# command in seconds (503) rather than holding it, and the next connect finds the new master.
SENTINEL_TIMEOUTS = {"socket_connect_timeout": 2, "socket_timeout": 5}


@dataclass(frozen=True)
class SentinelUrl:
    """A REDIS_URL naming a Sentinel set rather than one Redis:

        redis+sentinel://[[username]:password@]host[:port][,host[:port]…]/<master name>[/<db>]

    The sentinels (port 26379 unless given) say where the master of that name is; the credentials and
    the database are the master's. The sentinels' own password, where they ask for one, is
    `sentinel_password` (BLAZE_REDIS_SENTINEL_PASSWORD). `parse` gives None for any other URL."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None

    @classmethod
    def parse(cls, url: str, sentinel_password: str | None = None) -> "SentinelUrl | None":
        parts = urlsplit(url)
        if parts.scheme != SENTINEL_SCHEME:
            return None
        userinfo, _, hosts = parts.netloc.rpartition("@")
        username, _, password = userinfo.partition(":")
        path = [segment for segment in parts.path.split("/") if segment]
        if not hosts or not 1 <= len(path) <= 2 or (len(path) == 2 and not path[1].isdigit()) or parts.query:
            raise ImproperlyConfigured(
                f"REDIS_URL {_shown(url)!r}: a Sentinel set is "
                "redis+sentinel://[[username]:password@]host[:port][,host[:port]…]/<master name>[/<db>]")
        return cls(sentinels=tuple(_address(host, url) for host in hosts.split(",")), master=unquote(path[0]),
                   db=int(path[1]) if len(path) == 2 else 0, username=unquote(username) or None,
                   password=unquote(password) or None, sentinel_password=sentinel_password or None)

    def sentinel_kwargs(self) -> dict[str, Any]:
        """How each sentinel is asked: quickly, and once (a sentinel that does not answer is passed over
        for the next, rather than retried with redis-py's default backoff)."""
        return {"password": self.sentinel_password, "socket_connect_timeout": 1, "socket_timeout": 1, "retry": None}

    def master_kwargs(self) -> dict[str, Any]:
        """The master's database and credentials, as redis-py's connections take them."""
        return {"db": self.db, "username": self.username, "password": self.password}

    def kombu_url(self) -> str:
        """The set as Celery's broker and result backend take it (`sentinel://…;sentinel://…`, the master's
        name in their transport options)."""
        auth = ""
        if self.username or self.password:
            auth = f"{quote(self.username or '', safe='')}:{quote(self.password or '', safe='')}@"
        return ";".join(f"sentinel://{auth}{_netloc(host)}:{port}/{self.db}" for host, port in self.sentinels)

    def celery_transport_options(self) -> dict[str, Any]:
        return {"master_name": self.master, "sentinel_kwargs": self.sentinel_kwargs()}

    def channel_layer_host(self) -> dict[str, Any]:
        """The set as channels_redis takes a host (it builds the Sentinel-backed pool itself)."""
        return {"master_name": self.master, "sentinels": [list(address) for address in self.sentinels],
                "sentinel_kwargs": self.sentinel_kwargs(), **self.master_kwargs(), **SENTINEL_TIMEOUTS}


def _address(text: str, url: str) -> tuple[str, int]:
    host, port = (text, "") if text.endswith("]") or ":" not in text else text.rsplit(":", 1)
    if not host or (port and not port.isdigit()):
        raise ImproperlyConfigured(f"REDIS_URL {_shown(url)!r}: {text!r} is not a host[:port]")
    return host.strip("[]"), int(port or 26379)


def _shown(url: str) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()  # never a password in a message


def _netloc(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@overload
def connection_pool(url: str, asynchronous: Literal[False] = False, **options: Any) -> redis.ConnectionPool: ...


@overload
def connection_pool(url: str, asynchronous: Literal[True], **options: Any) -> redis.asyncio.ConnectionPool: ...


def connection_pool(url: str, asynchronous: bool = False,
                    **options: Any) -> redis.ConnectionPool | redis.asyncio.ConnectionPool:
    """A new pool of connections to the Redis `url` names (redis-py's asyncio one if `asynchronous`): a plain
    URL's as `ConnectionPool.from_url` makes it; a Sentinel set's master's, each connection asking the
    sentinels where it is as it opens (redis-py's `SentinelConnectionPool`, as `Sentinel.master_for`
    makes it). `options`: the connections' (timeouts, decode_responses, connection_class)."""
    library = redis.asyncio if asynchronous else redis
    target = SentinelUrl.parse(url, settings.REDIS_SENTINEL_PASSWORD)
    if target is None:
        return library.ConnectionPool.from_url(url, **options)
    sentinels = library.sentinel.Sentinel(target.sentinels, sentinel_kwargs=target.sentinel_kwargs())
    return library.sentinel.SentinelConnectionPool(target.master, sentinels, **target.master_kwargs(), **options)


class CachePool:
    """What Django's Redis cache makes its pool with (OPTIONS `pool_class`): `connection_pool`, so the cache
    follows a Sentinel set's master as every other client does."""

    from_url = staticmethod(connection_pool)


def key(*parts: object) -> str:
    return ":".join([settings.REDIS_PREFIX, *map(str, parts)])


def worker_key(hostname: str) -> str:
    return key("worker", hostname)


def workers_key() -> str:
    return key("workers")


def worker_catalog_key(hostname: str) -> str:
    """The models a worker can serve, as it last scanned them (engines/worker/catalog.py)."""
    return key("worker", hostname, "catalog")


def download_key(download_id: str) -> str:
    """A model download's record, as JSON (engines/downloads.py)."""
    return key("download", download_id)


def download_cancel_key(download_id: str) -> str:
    """Set when an operator cancels a download: the worker fetching it stops at its next chunk."""
    return key("download", download_id, "cancel")


def downloads_key() -> str:
    """Sorted set: the ids of the model downloads asked for, scored by when each was asked for."""
    return key("downloads")


def engine_load_key(name: str) -> str:
    """An engine's last load on any worker: {"seconds", "bytes"} (the cold-start estimate, and the
    room a worker needs for it)."""
    return key("engine", name, "load")


def engine_stats_key(name: str) -> str:
    return key("engine", name, "stats")


@lru_cache(maxsize=None)
def _pool(url: str) -> redis.ConnectionPool:
    # Timeouts: a hung Redis must fail a request (every caller fails open or reports it), not
    # stall the event loop. No synchronous caller blocks on Redis on purpose.
    return connection_pool(url, decode_responses=True, socket_connect_timeout=2, socket_timeout=5)


# The clients are Any to their callers: redis-py types each command's reply `Awaitable[T] | T`, for the
# synchronous client too, which would take a cast at every call.
def client() -> Any:
    """A synchronous client on a shared pool (thread-safe)."""
    return _client(settings.REDIS_URL)


def new_client(**options: Any) -> redis.Redis:
    """A synchronous client on a pool of its own with these options (a probe's shorter timeouts), closed
    with it."""
    return redis.Redis.from_pool(connection_pool(settings.REDIS_URL, **options))


@lru_cache(maxsize=None)
def _client(url: str) -> redis.Redis:
    # One per URL: building a redis.Redis costs about as much as a round trip to Redis.
    return redis.Redis(connection_pool=_pool(url))


# event loop → {url: asyncio client}
_loop_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Any]] = weakref.WeakKeyDictionary()


def loop_client() -> Any:
    """The running event loop's asyncio client, made on first use and kept: asyncio connections
    belong to the loop that opened them, and a client per call would connect and handshake anew each time."""
    clients = _loop_clients.setdefault(asyncio.get_running_loop(), {})
    url = settings.REDIS_URL
    if url not in clients:
        # No socket_timeout for one Redis: with one, redis-py wraps every command's write in
        # asyncio.wait_for, a new task per command, which cost more CPU than the command itself on the
        # serving path. A Sentinel set's master pays it (about 15 µs a command): a master that hangs
        # is failed over, and the commands waiting on it must end, not wait for it to wake.
        scheme = urlsplit(url).scheme
        options: dict[str, Any]
        if scheme == "redis":  # plain TCP
            options = {"connection_class": HiredisPackedConnection, "socket_connect_timeout": 2}
        elif scheme == SENTINEL_SCHEME:
            options = {"connection_class": HiredisPackedSentinelConnection, **SENTINEL_TIMEOUTS}
        else:
            options = {"socket_connect_timeout": 2}
        pool = connection_pool(url, asynchronous=True, decode_responses=True, **options)
        clients[url] = redis.asyncio.Redis.from_pool(pool)
    return clients[url]


class HiredisPackedConnection(redis.asyncio.Connection):
    """redis-py's asyncio connection with its commands packed by hiredis, as its synchronous one
    packs them (redis-py's asyncio one packs in Python, several times slower per command). It splits
    two-word command names as redis-py's packer does: tests/test_library_seams.py checks the bytes
    match redis-py's own."""

    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str):  # a command named in two words ("SCRIPT LOAD") goes as two arguments
            args = (*args[0].encode().split(), *args[1:])
        elif b" " in args[0]:
            args = (*args[0].split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError as exc:  # what redis-py raises for a value it cannot send (None, a bool)
            raise redis.exceptions.DataError(str(exc)) from exc


class HiredisPackedSentinelConnection(redis.asyncio.sentinel.SentinelManagedConnection, HiredisPackedConnection):
    """The same packing on a connection to a Sentinel set's master (found anew on each connect)."""


class Script:
    """A Lua script from a file, run by its SHA: `run` on the shared pool, `arun` on the running loop's
    asyncio client (where the serving path spares itself a thread hop), `queue` onto a pipeline that
    `batch` or `abatch` sends. Redis is given the script when it lacks it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        _scripts.append(self)

    @cached_property
    def _sync(self) -> Any:  # redis-py's Script
        return client().register_script(self.path.read_text())

    def run(self, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """The script's reply."""
        return self._sync(keys=keys, args=args, client=client())

    async def arun(self, keys: Sequence[str], args: Sequence[Any]) -> Any:
        redis_client = loop_client()
        try:
            return await redis_client.evalsha(self._sync.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            return await redis_client.eval(self._sync.script, len(keys), *keys, *args)

    def queue(self, pipe: Any, keys: Sequence[str], args: Sequence[Any]) -> None:
        """Put the script on a pipeline that `batch` or `abatch` sends (by SHA: no SCRIPT EXISTS first,
        as redis-py's own pipelines send)."""
        pipe.evalsha(self._sync.sha, len(keys), *keys, *args)


_scripts: list[Script] = []  # every Script, loaded again when Redis has lost them


def batch(queue: Callable[[Any], object]) -> list[Any]:
    """The replies of the commands `queue(pipe)` puts on a pipeline of the shared pool, sent in one round
    trip (no transaction); scripts go on it with `Script.queue`. When Redis has lost the scripts (a
    restart or SCRIPT FLUSH: all of them at once, so none of the batch's scripts ran), they are loaded
    and the batch is sent again; its plain commands then run twice, so a batch holds only plain
    commands that may (reads, a SET, a turn counter's INCR)."""
    try:
        return _queued(client(), queue).execute()
    except redis.exceptions.NoScriptError:
        for script in _scripts:
            client().script_load(script._sync.script)
        return _queued(client(), queue).execute()


def _queued(redis_client: Any, queue: Callable[[Any], object]) -> Any:
    """A pipeline (no transaction) of `redis_client` with the commands `queue(pipe)` puts on it."""
    pipe = redis_client.pipeline(transaction=False)
    queue(pipe)
    return pipe


class Parts:
    """The replies of a batch by name, each part being the commands queued inside `named(name, pipe)`,
    instead of sliced by position:

        parts = Parts()
        def queue(pipe):
            with parts.named("health", pipe):
                health.queue_checks(pipe, names)
        replies = parts.split(await abatch(queue))  # replies["health"]: that part's replies
    """

    def __init__(self) -> None:
        self._spans: dict[str, slice] = {}

    @contextmanager
    def named(self, name: str, pipe: Any) -> Iterator[None]:
        start = len(pipe)  # the commands queued so far (redis-py's Pipeline.__len__)
        yield
        self._spans[name] = slice(start, len(pipe))

    def split(self, replies: list[Any]) -> dict[str, list[Any]]:
        return {name: replies[span] for name, span in self._spans.items()}


async def abatch(queue: Callable[[Any], object]) -> list[Any]:
    """`batch` on the running loop's asyncio client."""
    try:
        return await _queued(loop_client(), queue).execute()
    except redis.exceptions.NoScriptError:
        for script in _scripts:
            await loop_client().script_load(script._sync.script)
        return await _queued(loop_client(), queue).execute()


def usage_events_key() -> str:
    """The stream of usage events waiting to be stored (usage/events.py, usage/persist.py)."""
    return key("usage", "events")


def engines_with_stats_key() -> str:
    """The names of the engines that have run batches (their stats and outcomes keys exist); an
    engine leaves it when it is deleted. Adaptive rate limits follow these engines' health."""
    return key("engines", "with-stats")


def engine_outcomes_key(name: str) -> str:
    """An engine's recent request outcomes, newest first: "1" succeeded, "0" failed."""
    return key("engine", name, "outcomes")


def ratelimit_bucket_key(policy_id: int, algorithm: str, identity: str) -> str:
    """A token or leaky bucket's state, per policy, algorithm and identity (`ip:10.0.0.7`, `user:4`…)."""
    return key("ratelimit", policy_id, algorithm, identity)


def ratelimit_window_prefix() -> str:
    """Key prefix handed to the `limits` library for its window counters (it appends `:<its key>`)."""
    return key("ratelimit", "window")


def ratelimit_health_key() -> str:
    """The adaptive limit's last sample of engine health (latency since the previous sample)."""
    return key("ratelimit", "health")


def threat_detections_key(ip: str) -> str:
    """Threat detections counted for one client address within the auto-block window."""
    return key("security", "detections", ip)


def outbound_rate_key(target: str) -> str:
    """A remote host's outbound token bucket (`ratelimits/lua/token_bucket.lua`'s hash {tokens, at})."""
    return key("outbound", target, "rate")


def outbound_slot_keys(target: str) -> list[str]:
    """A remote host's concurrency slots held, its line of waiters, and when each waiter last asked."""
    return [key("outbound", target, part) for part in ("slots", "line", "seen")]


def breaker_key(target: str) -> str:
    """A circuit breaker's state hash: state, failures, successes, window_failures, opened_at, changed_at."""
    return key("breaker", target)


def breaker_window_key(target: str) -> str:
    """A breaker's last calls while closed, newest first: "1" succeeded, "0" failed (for the failure rate)."""
    return key("breaker", target, "window")


def breaker_trials_key(target: str) -> str:
    """A half-open breaker's trial calls in flight: permit id → time granted (sorted set)."""
    return key("breaker", target, "trials")


def breaker_transitions_key(target: str) -> str:
    """A breaker's recent state changes, newest first, as JSON (bounded)."""
    return key("breaker", target, "transitions")


def breakers_key() -> str:
    """Every target that has a breaker (a set), for the pages that list them."""
    return key("breakers")


def health_key(target: str) -> str:
    """A target's health hash: state, since, consecutive_failures, latency EWMA, check counts, last error."""
    return key("health", target)


def health_outcomes_key(target: str) -> str:
    """A target's recent outcomes (checks and traffic), newest first: "<1|0>:<latency seconds>"."""
    return key("health", target, "outcomes")


def health_checks_key(target: str) -> str:
    """A target's last active checks, newest first, as JSON (bounded)."""
    return key("health", target, "checks")


def health_targets_key() -> str:
    """Every target with a health record (a set)."""
    return key("health-targets")


def route_turn_key(route_id: int) -> str:
    """A route's pick counter (INCR): round robin and weighted round robin take turns from it."""
    return key("route", route_id, "turn")


def route_sticky_key(route_id: int, client_key: str) -> str:
    """IP hash: the target id a client (`ip:…`, `key:…`, `session:…`) was given, expiring with the route's TTL."""
    return key("route", route_id, "sticky", client_key)


def route_sticky_pattern(route_id: int) -> str:
    """SCAN pattern for every sticky mapping of a route (to forget them when it is deleted)."""
    return key("route", route_id, "sticky", "*")


def route_target_stats_key(target_pk: int) -> str:
    """A route target's counters and averages, hash {requests, completed, errors, latency, error_rate}."""
    return key("route-target", target_pk, "stats")


def route_target_leases_key(target_pk: int) -> str:
    """A route target's requests in flight: sorted set of lease ids scored by when they expire."""
    return key("route-target", target_pk, "leases")


def route_target_latencies_key(target_pk: int) -> str:
    """A route target's recent successful latencies in seconds, newest first (bounded), for p50/p95."""
    return key("route-target", target_pk, "latencies")


def history_points_key(series: str) -> str:
    return key("history", "points", series)


def history_minutes_key(series: str) -> str:
    return key("history", "minutes", series)


def history_series_key() -> str:
    return key("history", "series")


def metrics_process_key(member: str) -> str:
    """One process's last metric samples (telemetry/cluster.py); `member` is host/role:pid."""
    return key("metrics", "process", member)


def metrics_processes_key() -> str:
    """Sorted set: the processes publishing metrics, scored by when each last did."""
    return key("metrics", "processes")


def feed_latest_key() -> str:
    return key("feed", "latest")


def feed_producer_key() -> str:
    return key("feed", "producer")


def request_log_key() -> str:
    return key("requests", "log")
