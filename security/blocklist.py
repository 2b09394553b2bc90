"""The active IP block list as the request path sees it: one Redis key, never a query per request.

The key holds the active blocks as JSON `[[network, expires_at epoch or null], …]`. A request reads
it (`cached()`); the first request after a change finds it missing and rebuilds it from the
database (`rebuild()`). Services invalidate it on every change, and again when their transaction
commits, so no process keeps refusing an unblocked address; the key also lives at most
`TTL_SECONDS`, which bounds what a rebuild racing a change could leave behind. Expiry is checked
against the stored time on each request, so a block lifts on the second, without a rebuild.

If Redis or the database does not answer, requests go through (the block list fails open) and a
warning is logged: refusing every client, `/health/detailed` included, because a dependency is down
would be worse than a missed block.
"""

import ipaddress
import json
import logging
import time
from dataclasses import dataclass

import redis
from django.conf import settings
from django.db import DatabaseError, transaction

from blaze_site import shared_state

from .models import IpBlock

TTL_SECONDS = 60

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    expires_at: float | None  # epoch seconds


_parsed = ("", ())  # the last raw value read and its entries: parse once per change, not per request


def _parse(raw):
    global _parsed
    if raw != _parsed[0]:
        entries = tuple(Entry(ipaddress.ip_network(network), expires) for network, expires in json.loads(raw))
        _parsed = (raw, entries)
    return _parsed[1]


def cached():
    """The cached entries, () when Redis is down, or None when the cache must be rebuilt."""
    try:
        raw = shared_state.client().get(shared_state.ip_blocks_key())
    except redis.RedisError as exc:
        return _unavailable(exc)
    return None if raw is None else _parse(raw)


async def acached():
    """`cached()` on the event loop's own client: a synchronous GET would hold up the whole loop."""
    try:
        raw = await shared_state.loop_client().get(shared_state.ip_blocks_key())
    except redis.RedisError as exc:
        return _unavailable(exc)
    return None if raw is None else _parse(raw)


def _unavailable(exc):
    logger.warning("IP block list unavailable, letting requests through: %s", exc)
    return ()


def rebuild():
    """Read the active blocks from the database into the cache; returns the entries."""
    try:
        rows = list(IpBlock.objects.active().values_list("network", "expires_at"))
    except DatabaseError as exc:
        logger.warning("IP block list unreadable, letting requests through: %s", exc)
        return ()
    raw = json.dumps([[network, expires.timestamp() if expires else None] for network, expires in rows])
    try:
        shared_state.client().set(shared_state.ip_blocks_key(), raw, ex=TTL_SECONDS)
    except redis.RedisError as exc:
        logger.warning("Could not cache the IP block list: %s", exc)
    return _parse(raw)


def invalidate():
    """Drop the cached list now and once the current transaction commits."""

    def drop():
        try:
            shared_state.client().delete(shared_state.ip_blocks_key())
        except redis.RedisError as exc:
            logger.warning("Could not invalidate the IP block list: %s", exc)

    drop()
    transaction.on_commit(drop)


def block_for(entries, ip, now=None):
    """The entry that blocks `ip` (a string), or None: unexpired, covering it, and `ip` not exempt."""
    if not ip or not entries:
        return None
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    now = now or time.time()
    for entry in entries:
        if address in entry.network and (entry.expires_at is None or entry.expires_at > now):
            return None if is_exempt(ip) else entry
    return None


def is_exempt(ip):
    """Whether `ip` is in BLAZE_BLOCK_EXEMPT_IPS: never refused by a block, never blocked automatically."""
    if not ip or not settings.BLAZE_BLOCK_EXEMPT_IPS:
        return False
    address = ipaddress.ip_address(ip)
    return any(address in ipaddress.ip_network(net, strict=False) for net in settings.BLAZE_BLOCK_EXEMPT_IPS)
