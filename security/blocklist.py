"""The active IP block list as the request path sees it: this process's copy, read from the
database again only after a block is added, changed or lifted anywhere.

The copy is a `core.lookups` entry, kept under the lookup token that every change of an
`IpBlock` replaces once it commits: a request reads that one token (which /v1 then uses for its own
lookups too) and no query. Expiry is checked against each entry's time on each request, so a block
lifts on the second, without a change.

If the database does not answer, requests go through (the block list fails open) and a warning is
logged: refusing every client, `/health/detailed` included, because a dependency is down would be
worse than a missed block. If Redis does not answer, nothing is cached and every request reads the
database.
"""

import ipaddress
import logging
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import DatabaseError

from core import lookups

from .models import IpBlock

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    expires_at: float | None  # epoch seconds


def load():
    """The active blocks from the database, or None (not cached) when it does not answer."""
    try:
        rows = list(IpBlock.objects.active().values_list("network", "expires_at"))
    except DatabaseError as exc:
        logger.warning("IP block list unreadable, letting requests through: %s", exc)
        return None
    return tuple(Entry(ipaddress.ip_network(network), expires.timestamp() if expires else None)
                 for network, expires in rows)


def entries(generation):
    """The active blocks, cached under the lookup token `generation`; () when unreadable."""
    return lookups.cached_now("ip_blocks", "", generation, load) or ()


async def aentries(generation):
    """`entries()` on the event loop: the database, when it must be read, in the sync thread."""
    return await lookups.cached("ip_blocks", "", generation, load) or ()


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
