"""Reads: the enabled policies as the request path sees them (cached per process), and each policy's
current usage for the operators."""

import logging
import time
from dataclasses import dataclass, replace

import redis
from django import db
from django.conf import settings

from core import shared_state

from . import algorithms
from .models import RateLimitPolicy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ActivePolicies:
    """The enabled policies, and the engines whose health adaptive policies follow."""

    policies: tuple
    engines: tuple
    loaded_at: float

    def matching(self, path):
        return [policy for policy in self.policies if policy.matches(path)]


_active = None


def _engine_names():
    """The engines that have run batches, from Redis (engines/worker/status.py writes the set): the
    limits sit below the engines and read none of their tables."""
    return tuple(sorted(shared_state.client().smembers(shared_state.engines_with_stats_key())))


def fresh_active_policies():
    """The cached policies while fresh (BLAZE_RATELIMIT_POLICY_CACHE_SECONDS), else None. No query:
    safe in async code."""
    active = _active
    if active is None or time.monotonic() - active.loaded_at > settings.BLAZE_RATELIMIT_POLICY_CACHE_SECONDS:
        return None
    return active


def load_active_policies():
    """Read the enabled policies from the database and cache them for this process. The database not
    answering: the policies last read stay in force, read again after another cache time (what /v1
    answers from its cached keys and plans must not fail on them); none read yet, the error is raised."""
    global _active
    try:
        policies = tuple(RateLimitPolicy.objects.filter(enabled=True).order_by("pk"))
        adaptive = any(policy.algorithm == RateLimitPolicy.Algorithm.ADAPTIVE for policy in policies)
        engines = _engine_names() if adaptive else ()
    except (db.OperationalError, db.InterfaceError) as exc:
        if _active is None:
            raise
        log.warning("Rate limit policies kept as last read: the database does not answer (%s)", exc)
        _active = replace(_active, loaded_at=time.monotonic())
        return _active
    _active = ActivePolicies(policies, engines, time.monotonic())
    return _active


def forget_active_policies():
    """Drop this process's cache (after a change); other processes reload within the cache time."""
    global _active
    _active = None


def policy_list():
    return RateLimitPolicy.objects.order_by("name")


def policy_usage(policy, limit=10):
    """The policy's live counters, most used first: [{identity, used, limit, remaining, reset, factor}].
    None when Redis does not answer."""
    engines = _engine_names() if policy.algorithm == RateLimitPolicy.Algorithm.ADAPTIVE else ()
    try:
        counters = []
        for identity in algorithms.identities(policy):
            decision = algorithms.peek(policy, identity, engines=engines)
            counters.append({
                "identity": identity, "used": decision.limit - decision.remaining, "limit": decision.limit,
                "remaining": decision.remaining, "reset": round(decision.reset, 2), "factor": round(decision.factor, 2),
            })
    except redis.RedisError as exc:
        log.warning("rate limit usage unavailable: %s", exc)
        return None
    return sorted(counters, key=lambda counter: -counter["used"])[:limit]
