"""Writes for security: recording threat detections, blocking and unblocking addresses.

Every detection and every block is a security event: an audit event (`security.<kind>`,
`security.ip_blocked`, `security.ip_unblocked`, on the audit log page) and a count in
`blaze_security_events_total`.
"""

import ipaddress
import logging
from datetime import timedelta

import redis
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts import audit
from core import shared_state
from core.errors import InvalidInput
from telemetry import metrics

from . import blocklist
from .models import IpBlock

logger = logging.getLogger(__name__)

AUTO_BLOCKER = audit.Actor.system("threat detection")


def _block_fields(block):
    return {
        "network": block.network, "reason": block.reason, "source": block.source,
        "expires_at": block.expires_at.isoformat() if block.expires_at else None,
    }


@transaction.atomic
def record_detection(*, actor, detection, method, path):
    """Audit and count a refused request; block its address after BLAZE_AUTOBLOCK_DETECTIONS of them
    within BLAZE_AUTOBLOCK_WINDOW_SECONDS (unless the address is exempt)."""
    audit.record(
        actor=actor, action=f"security.{detection.kind}", target_repr=f"{method} {path}",
        data={"where": detection.where, "pattern": detection.label, "sample": detection.sample},
    )
    metrics.SECURITY_EVENTS.labels(detection.kind).inc()
    threshold = settings.BLAZE_AUTOBLOCK_DETECTIONS
    if not threshold or not actor.ip or blocklist.is_exempt(actor.ip):
        return None
    # Exactly at the threshold: requests racing past it must not block twice.
    if _count_detection(actor.ip) != threshold:
        return None
    _reset_detections(actor.ip)
    return ip_block(
        actor=AUTO_BLOCKER, network=actor.ip, source=IpBlock.Source.AUTO,
        reason=f"{threshold} threat detections within {settings.BLAZE_AUTOBLOCK_WINDOW_SECONDS} s",
        expires_at=timezone.now() + timedelta(seconds=settings.BLAZE_AUTOBLOCK_SECONDS),
    )


def _count_detection(ip):
    """This address's detections in the current window (INCR on a key the first one opens), 0 when
    Redis does not answer."""
    key = shared_state.threat_detections_key(ip)
    try:
        pipe = shared_state.client().pipeline(transaction=True)
        pipe.set(key, 0, ex=settings.BLAZE_AUTOBLOCK_WINDOW_SECONDS, nx=True)
        pipe.incr(key)
        return pipe.execute()[1]
    except redis.RedisError as exc:
        logger.warning("Could not count a threat detection from %s: %s", ip, exc)
        return 0


def _reset_detections(ip):
    try:
        shared_state.client().delete(shared_state.threat_detections_key(ip))
    except redis.RedisError as exc:
        logger.warning("Could not reset the threat detections of %s: %s", ip, exc)


@transaction.atomic
def ip_block(*, actor, network, reason, expires_at=None, source=IpBlock.Source.MANUAL):
    """Block an address or CIDR network until `expires_at` (None: until unblocked). Blocking a network
    already blocked replaces its reason and expiry. Raises InvalidInput for a bad network, a past
    expiry, or a network that holds the acting person's own address."""
    try:
        network = IpBlock.normalise(network)
    except ValueError:
        raise InvalidInput(
            "Enter an IP address (203.0.113.7) or a CIDR network (203.0.113.0/24).", field="network"
        ) from None
    if not (reason or "").strip():
        raise InvalidInput("Say why: the reason is shown to other admins and in the audit log.", field="reason")
    if expires_at is not None and expires_at <= timezone.now():
        raise InvalidInput("Must be in the future.", field="expires_at")
    if (actor.ip and ipaddress.ip_address(actor.ip) in ipaddress.ip_network(network)
            and not blocklist.is_exempt(actor.ip)):
        raise InvalidInput(
            f"{network} holds your own address {actor.ip}: blocking it would lock you out.", field="network"
        )
    block = IpBlock.objects.select_for_update().filter(network=network).first()
    before = _block_fields(block) if block else {}
    if block is None:
        block = IpBlock(network=network)
    block.reason, block.source, block.expires_at = reason.strip()[:300], source, expires_at
    block.created_by, block.created_at = actor.user, timezone.now()
    block.save()
    audit.record(
        actor=actor, action="security.ip_blocked", target=block, changes=audit.diff(before, _block_fields(block))
    )
    metrics.SECURITY_EVENTS.labels("ip_blocked").inc()
    return block


@transaction.atomic
def ip_unblock(*, actor, block):
    """Lift a block now; the address starts again from no detections."""
    audit.record(
        actor=actor, action="security.ip_unblocked", target=block, changes=audit.diff(_block_fields(block), {})
    )
    block.delete()
    network = ipaddress.ip_network(block.network)
    if network.num_addresses == 1:
        _reset_detections(str(network.network_address))
