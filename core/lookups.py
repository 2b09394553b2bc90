"""What the request path looks up on every request — the IP block list, the API key a caller sends,
the plan for the model it names — kept in this process while the rows behind it are unchanged.

A generation token in Redis is replaced after every committed save or delete of a watched model (the
apps name theirs in `ready()`: `watch(...)`), in whichever process made it. An entry counts only while
the token it was made under is current, so a request reads one Redis key instead of querying the
database and going to the sync thread, and a lifted block, a revoked key or a disabled engine takes
effect as soon as the change commits. A change in this process also empties this process's entries at
once (tests run inside a transaction that never commits). The token is read once per request, by the
block list's middleware, and kept on the request (`request.lookups_generation`) for the rest of it.

Redis unreachable: nothing is cached and every lookup reads the database. Entries are also read again
after BLAZE_LOOKUP_CACHE_SECONDS whatever the token says, a backstop for a token write that failed.
"""

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Hashable
from typing import Any

import redis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save

from core import shared_state

log = logging.getLogger(__name__)

MAX_ENTRIES = 10_000
_entries: dict[tuple[str, Hashable], tuple[str, float, Any]] = {}  # (kind, key) → (generation, made at, value)
Flight = tuple[asyncio.AbstractEventLoop, str, Hashable, str | None]  # (event loop, kind, key, generation)
_flights: dict[Flight, asyncio.Future[Any]] = {}  # the loads in flight


def _key() -> str:
    return shared_state.key("lookups", "generation")


def _unanswered(exc: redis.RedisError) -> None:
    log.warning("Lookups not cached: Redis does not answer (%s)", exc)


async def generation() -> str | None:
    """The current token ("" before the first change), or None when Redis cannot be asked (then
    nothing is cached). On the loop's own client: a synchronous GET here would hold up every
    request this process serves until Redis answers."""
    try:
        return await shared_state.loop_client().get(_key()) or ""
    except redis.RedisError as exc:
        _unanswered(exc)
        return None


def current_generation() -> str | None:
    """`generation()` for synchronous callers."""
    try:
        return shared_state.client().get(_key()) or ""
    except redis.RedisError as exc:
        _unanswered(exc)
        return None


async def cached(kind: str, key: Hashable, current: str | None, load: Callable[[], Any]) -> Any:
    """The value `load()` (synchronous, reads the database; run in the sync thread) returns, from this
    process's entries while made under the generation `current`. A None or an exception from `load`
    is passed on and not kept.

    Requests that miss the same entry at once share one load; an entry older than
    BLAZE_LOOKUP_CACHE_SECONDS is still served, once, while one load replaces it in the background.
    Otherwise, when an entry lapsed under load, every request in flight would queue its own copy of
    the load in the one sync thread."""
    entry = _entries.get((kind, key)) if current is not None else None
    if entry is None or entry[0] != current:
        return await asyncio.shield(_loading(kind, key, current, load))  # one leaving does not cancel the others'
    if time.monotonic() - entry[1] >= settings.BLAZE_LOOKUP_CACHE_SECONDS:
        _loading(kind, key, current, load)
    return entry[2]


def _loading(kind: str, key: Hashable, current: str | None, load: Callable[[], Any]) -> asyncio.Future[Any]:
    """The load of this entry in flight on the running loop, started if there is none."""
    flight = (asyncio.get_running_loop(), kind, key, current)
    task = _flights.get(flight)
    if task is None:
        task = _flights[flight] = asyncio.ensure_future(_load(kind, key, current, load))
        task.add_done_callback(lambda done: _landed(flight, done))
    return task


def _landed(flight: Flight, task: asyncio.Future[Any]) -> None:
    _flights.pop(flight, None)
    if not task.cancelled() and task.exception() is not None:  # its waiters, if any, get it too
        log.warning("Could not read the %s lookup %r: %s", flight[1], flight[2], task.exception())


async def _load(kind: str, key: Hashable, current: str | None, load: Callable[[], Any]) -> Any:
    return _kept(kind, key, current, await sync_to_async(load)())


def cached_now(kind: str, key: Hashable, current: str | None, load: Callable[[], Any]) -> Any:
    """`cached()` for synchronous callers: `load` runs in the calling thread."""
    value = _entry(kind, key, current)
    if value is None:
        value = _kept(kind, key, current, load())
    return value


def _entry(kind: str, key: Hashable, current: str | None) -> Any:
    if current is None:
        return None
    entry = _entries.get((kind, key))
    if entry is None or entry[0] != current or time.monotonic() - entry[1] >= settings.BLAZE_LOOKUP_CACHE_SECONDS:
        return None
    return entry[2]


def _kept(kind: str, key: Hashable, current: str | None, value: Any) -> Any:
    if current is not None and value is not None:
        if len(_entries) >= MAX_ENTRIES:
            _entries.clear()
        _entries[(kind, key)] = (current, time.monotonic(), value)
    return value


def forget() -> None:
    """Drop this process's entries (the next lookups read the database)."""
    _entries.clear()


def _bump() -> None:
    try:
        shared_state.client().set(_key(), uuid.uuid4().hex)
    except redis.RedisError as exc:
        log.warning("Could not announce a change to cached lookups (Redis: %s); other processes see it "
                    "within BLAZE_LOOKUP_CACHE_SECONDS", exc)


def _changed(**kwargs: Any) -> None:
    forget()
    # After the commit: a process that read the rows before it would otherwise cache them under the new token.
    transaction.on_commit(_bump)


def watch(*models: Any, through: tuple[Any, ...] = ()) -> None:
    """End the cached lookups whenever one of `models` is saved or deleted, or one of the `through`
    many-to-many relations changes (each app calls this from its AppConfig.ready for the models its
    lookups are made of)."""
    for model in models:
        post_save.connect(_changed, sender=model, dispatch_uid=f"lookups-save-{model._meta.label}")
        post_delete.connect(_changed, sender=model, dispatch_uid=f"lookups-delete-{model._meta.label}")
    for relation in through:
        m2m_changed.connect(_changed, sender=relation, dispatch_uid=f"lookups-m2m-{relation._meta.label}")
