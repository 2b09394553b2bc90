"""The one place that knows Redis key names and hands out Redis clients (and runs Lua scripts on them).

Every key starts with settings.REDIS_PREFIX, so several Blaze installations (or test runs) can share
one Redis.
"""

import asyncio
import weakref
from contextlib import contextmanager
from functools import cached_property, lru_cache
from pathlib import Path
from urllib.parse import urlsplit

import hiredis
import redis
import redis.asyncio
from django.conf import settings


def key(*parts):
    return ":".join([settings.REDIS_PREFIX, *map(str, parts)])


def worker_key(hostname):
    return key("worker", hostname)


def workers_key():
    return key("workers")


def engine_stats_key(name):
    return key("engine", name, "stats")


@lru_cache(maxsize=None)
def _pool(url):
    # Timeouts: a hung Redis must fail a request (every caller fails open or reports it), not
    # stall the event loop. No synchronous caller blocks on Redis on purpose.
    return redis.ConnectionPool.from_url(url, decode_responses=True, socket_connect_timeout=2, socket_timeout=5)


def client():
    """A synchronous client on a shared pool (thread-safe)."""
    return _client(settings.REDIS_URL)


@lru_cache(maxsize=None)
def _client(url):
    # One per URL: building a redis.Redis costs about as much as a round trip to Redis.
    return redis.Redis(connection_pool=_pool(url))


_loop_clients = weakref.WeakKeyDictionary()  # event loop → {url: asyncio client}


def loop_client():
    """The running event loop's asyncio client, made on first use and kept: asyncio connections
    belong to the loop that opened them, and a client per call would connect and handshake anew each time."""
    clients = _loop_clients.setdefault(asyncio.get_running_loop(), {})
    url = settings.REDIS_URL
    if url not in clients:
        # No socket_timeout: with one, redis-py wraps every command's write in asyncio.wait_for, a new
        # task per command, which cost more CPU than the command itself on the serving path.
        packed = {"connection_class": HiredisPackedConnection} if urlsplit(url).scheme == "redis" else {}  # plain TCP
        clients[url] = redis.asyncio.Redis.from_url(url, decode_responses=True, socket_connect_timeout=2, **packed)
    return clients[url]


class HiredisPackedConnection(redis.asyncio.Connection):
    """redis-py's asyncio connection with its commands packed by hiredis, as its synchronous one
    packs them (redis-py's asyncio one packs in Python, several times slower per command). It splits
    two-word command names as redis-py's packer does: tests/test_library_seams.py checks the bytes
    match redis-py's own."""

    def pack_command(self, *args):
        if isinstance(args[0], str):  # a command named in two words ("SCRIPT LOAD") goes as two arguments
            args = (*args[0].encode().split(), *args[1:])
        elif b" " in args[0]:
            args = (*args[0].split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError as exc:  # what redis-py raises for a value it cannot send (None, a bool)
            raise redis.exceptions.DataError(str(exc)) from exc


class Script:
    """A Lua script from a file, run by its SHA: `run` on the shared pool, `arun` on the running loop's
    asyncio client (where the serving path spares itself a thread hop), `queue` onto a pipeline that
    `batch` or `abatch` sends. Redis is given the script when it lacks it."""

    def __init__(self, path):
        self.path = Path(path)
        _scripts.append(self)

    @cached_property
    def _sync(self):
        return client().register_script(self.path.read_text())

    def run(self, keys, args):
        """The script's reply."""
        return self._sync(keys=keys, args=args, client=client())

    async def arun(self, keys, args):
        redis_client = loop_client()
        try:
            return await redis_client.evalsha(self._sync.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            return await redis_client.eval(self._sync.script, len(keys), *keys, *args)

    def queue(self, pipe, keys, args):
        """Put the script on a pipeline that `batch` or `abatch` sends (by SHA: no SCRIPT EXISTS first,
        as redis-py's own pipelines send)."""
        pipe.evalsha(self._sync.sha, len(keys), *keys, *args)


_scripts = []  # every Script, loaded again when Redis has lost them


def batch(queue):
    """The replies of the commands `queue(pipe)` puts on a pipeline of the shared pool, sent in one round
    trip (no transaction); scripts go on it with `Script.queue`. When Redis has lost the scripts (a
    restart or SCRIPT FLUSH: all of them at once, so none of the batch's scripts ran), they are loaded
    and the batch is sent again; its plain commands then run twice, so a batch holds only plain
    commands that may (reads, a SET, a turn counter's INCR)."""
    for attempt in range(2):
        pipe = client().pipeline(transaction=False)
        queue(pipe)
        try:
            return pipe.execute()
        except redis.exceptions.NoScriptError:
            if attempt:
                raise
            for script in _scripts:
                client().script_load(script._sync.script)


class Parts:
    """The replies of a batch by name, each part being the commands queued inside `named(name, pipe)`,
    instead of sliced by position:

        parts = Parts()
        def queue(pipe):
            with parts.named("health", pipe):
                health.queue_checks(pipe, names)
        replies = parts.split(await abatch(queue))  # replies["health"]: that part's replies
    """

    def __init__(self):
        self._spans = {}

    @contextmanager
    def named(self, name, pipe):
        start = len(pipe.command_stack)
        yield
        self._spans[name] = slice(start, len(pipe.command_stack))

    def split(self, replies):
        return {name: replies[span] for name, span in self._spans.items()}


async def abatch(queue):
    """`batch` on the running loop's asyncio client."""
    for attempt in range(2):
        pipe = loop_client().pipeline(transaction=False)
        queue(pipe)
        try:
            return await pipe.execute()
        except redis.exceptions.NoScriptError:
            if attempt:
                raise
            for script in _scripts:
                await loop_client().script_load(script._sync.script)


def engine_outcomes_key(name):
    """An engine's recent request outcomes, newest first: "1" succeeded, "0" failed."""
    return key("engine", name, "outcomes")


def ratelimit_bucket_key(policy_id, algorithm, identity):
    """A token or leaky bucket's state, per policy, algorithm and identity (`ip:10.0.0.7`, `user:4`…)."""
    return key("ratelimit", policy_id, algorithm, identity)


def ratelimit_window_prefix():
    """Key prefix handed to the `limits` library for its window counters (it appends `:<its key>`)."""
    return key("ratelimit", "window")


def ratelimit_health_key():
    """The adaptive limit's last sample of engine health (latency since the previous sample)."""
    return key("ratelimit", "health")


def threat_detections_key(ip):
    """Threat detections counted for one client address within the auto-block window."""
    return key("security", "detections", ip)


def outbound_rate_key(target):
    """A remote host's outbound token bucket (`ratelimits/lua/token_bucket.lua`'s hash {tokens, at})."""
    return key("outbound", target, "rate")


def outbound_slot_keys(target):
    """A remote host's concurrency slots held, its line of waiters, and when each waiter last asked."""
    return [key("outbound", target, part) for part in ("slots", "line", "seen")]


def breaker_key(target):
    """A circuit breaker's state hash: state, failures, successes, window_failures, opened_at, changed_at."""
    return key("breaker", target)


def breaker_window_key(target):
    """A breaker's last calls while closed, newest first: "1" succeeded, "0" failed (for the failure rate)."""
    return key("breaker", target, "window")


def breaker_trials_key(target):
    """A half-open breaker's trial calls in flight: permit id → time granted (sorted set)."""
    return key("breaker", target, "trials")


def breaker_transitions_key(target):
    """A breaker's recent state changes, newest first, as JSON (bounded)."""
    return key("breaker", target, "transitions")


def breakers_key():
    """Every target that has a breaker (a set), for the pages that list them."""
    return key("breakers")


def health_key(target):
    """A target's health hash: state, since, consecutive_failures, latency EWMA, check counts, last error."""
    return key("health", target)


def health_outcomes_key(target):
    """A target's recent outcomes (checks and traffic), newest first: "<1|0>:<latency seconds>"."""
    return key("health", target, "outcomes")


def health_checks_key(target):
    """A target's last active checks, newest first, as JSON (bounded)."""
    return key("health", target, "checks")


def health_targets_key():
    """Every target with a health record (a set)."""
    return key("health-targets")


def route_turn_key(route_id):
    """A route's pick counter (INCR): round robin and weighted round robin take turns from it."""
    return key("route", route_id, "turn")


def route_sticky_key(route_id, client_key):
    """IP hash: the target id a client (`ip:…`, `key:…`, `session:…`) was given, expiring with the route's TTL."""
    return key("route", route_id, "sticky", client_key)


def route_sticky_pattern(route_id):
    """SCAN pattern for every sticky mapping of a route (to forget them when it is deleted)."""
    return key("route", route_id, "sticky", "*")


def route_target_stats_key(target_pk):
    """A route target's counters and averages, hash {requests, completed, errors, latency, error_rate}."""
    return key("route-target", target_pk, "stats")


def route_target_leases_key(target_pk):
    """A route target's requests in flight: sorted set of lease ids scored by when they expire."""
    return key("route-target", target_pk, "leases")


def route_target_latencies_key(target_pk):
    """A route target's recent successful latencies in seconds, newest first (bounded), for p50/p95."""
    return key("route-target", target_pk, "latencies")


def history_points_key(series):
    return key("history", "points", series)


def history_minutes_key(series):
    return key("history", "minutes", series)


def history_series_key():
    return key("history", "series")


def feed_latest_key():
    return key("feed", "latest")


def feed_producer_key():
    return key("feed", "producer")


def request_log_key():
    return key("requests", "log")
