"""What /v1 looks up on every request — the API key a caller sends, the plan for the model it names —
kept in this process while the rows behind it are unchanged.

A generation token in Redis is replaced after every committed save or delete of an API key, user,
group, permission set, engine, route or route target, in whichever process made it (signals below).
An entry counts only while the token it was made under is current, so a request costs one Redis GET
instead of five or six queries and two trips to the sync thread, and a revoked key or a disabled
engine stops being served as soon as the change commits. A change in this process also empties this
process's entries at once (tests run inside a transaction that never commits).

Redis unreachable: nothing is cached and every lookup reads the database. Entries also lapse after
BLAZE_LOOKUP_CACHE_SECONDS whatever the token says, a backstop for a token write that failed.
"""

import logging
import time
import uuid

import redis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.models import Group
from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save

from accounts.models import ApiKey, User
from blaze_site import shared_state

from .models import Engine, Route, RouteTarget

log = logging.getLogger(__name__)

MAX_ENTRIES = 10_000
_entries = {}  # (kind, key) → (generation, made at, value)


def _key():
    return shared_state.key("lookups", "generation")


async def generation():
    """The current token ("" before the first change), or None when Redis cannot be asked (then
    nothing is cached). On the loop's own client: a synchronous GET here would hold up every
    request this process serves until Redis answers."""
    try:
        return await shared_state.loop_client().get(_key()) or ""
    except redis.RedisError as exc:
        log.warning("Lookups not cached: Redis does not answer (%s)", exc)
        return None


async def cached(kind, key, current, load):
    """The value `load()` (synchronous, reads the database) returns, from this process's entries
    while made under the generation `current` and younger than BLAZE_LOOKUP_CACHE_SECONDS. A None or
    an exception from `load` is passed on and not kept."""
    now = time.monotonic()
    if current is not None:
        entry = _entries.get((kind, key))
        if entry is not None and entry[0] == current and now - entry[1] < settings.BLAZE_LOOKUP_CACHE_SECONDS:
            return entry[2]
    value = await sync_to_async(load)()
    if current is not None and value is not None:
        if len(_entries) >= MAX_ENTRIES:
            _entries.clear()
        _entries[(kind, key)] = (current, now, value)
    return value


def forget():
    """Drop this process's entries (the next lookups read the database)."""
    _entries.clear()


def _bump():
    try:
        shared_state.client().set(_key(), uuid.uuid4().hex)
    except redis.RedisError as exc:
        log.warning("Could not announce a change to cached lookups (Redis: %s); other processes see it "
                    "within BLAZE_LOOKUP_CACHE_SECONDS", exc)


def _changed(**kwargs):
    forget()
    # After the commit: a process that read the rows before it would otherwise cache them under the new token.
    transaction.on_commit(_bump)


def connect():
    """Watch the models the cached lookups are made of (called once, from EnginesConfig.ready)."""
    for model in (ApiKey, User, Group, Engine, Route, RouteTarget):
        post_save.connect(_changed, sender=model, dispatch_uid=f"lookups-save-{model.__name__}")
        post_delete.connect(_changed, sender=model, dispatch_uid=f"lookups-delete-{model.__name__}")
    for through in (User.groups.through, User.user_permissions.through, Group.permissions.through):
        m2m_changed.connect(_changed, sender=through, dispatch_uid=f"lookups-m2m-{through.__name__}")
