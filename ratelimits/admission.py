"""Counting one request against the enabled policies that match its path, for the HTTP middleware and
for what arrives another way (a playground message counts as the /v1 request it stands for). Redis
down, or the database when a credential's owner must be read: the request passes (fail open) and a
warning is logged; the policies last read stay in force while the database is away (`selectors`)."""

import asyncio
import logging
import math
import time
from dataclasses import dataclass

import redis
from asgiref.sync import sync_to_async
from django import db
from django.http import HttpRequest

from telemetry import metrics

from . import algorithms, identity, selectors
from .models import RateLimitPolicy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    """Refused by `refused_by` (its `decision` says when to retry), or admitted with the tightest
    `decision` among the policies that counted the request (None when none did)."""

    refused_by: RateLimitPolicy | None = None
    decision: algorithms.Decision | None = None

    @property
    def retry_after(self):
        return max(1, math.ceil(self.decision.retry_after))

    @property
    def message(self):
        policy = self.refused_by
        return (f"Rate limit exceeded ({policy.name}: {policy.limit} requests per {policy.period_seconds} s). "
                f"Try again in {self.retry_after} s.")


ADMITTED = Verdict()


def _admission(request, user, policies, engines):
    """Count the request against each policy in turn. A generator so that the sync and the async
    callers share this one loop and each waits its own way: it yields seconds to wait (the delay
    action), then the Verdict."""
    try:
        found = identity.identities(request, user, {policy.scope for policy in policies})
        tightest = None
        for policy in policies:
            who = found.get(policy.scope)
            if who is None:
                continue
            delays = policy.action == RateLimitPolicy.Action.DELAY
            deadline = time.monotonic() + (policy.max_delay if delays else 0)
            waited = False
            while True:
                decision = algorithms.hit(policy, who, max_wait=max(0.0, deadline - time.monotonic()), engines=engines)
                if decision.allowed or not delays or decision.retry_after > deadline - time.monotonic():
                    break
                # A window cannot reserve a turn: wait for it to move on, then count again.
                waited = True
                yield decision.retry_after
            if not decision.allowed:
                metrics.RATE_LIMIT_REJECTIONS.labels(policy.scope, policy.algorithm, "reject").inc()
                yield Verdict(refused_by=policy, decision=decision)
                return
            if decision.wait:
                waited = True
                yield decision.wait
            if waited:
                metrics.RATE_LIMIT_REJECTIONS.labels(policy.scope, policy.algorithm, "delay").inc()
            if tightest is None or decision.remaining < tightest.remaining:
                tightest = decision
        yield Verdict(decision=tightest)
    except redis.RedisError as exc:
        log.warning("Rate limits not applied: Redis does not answer (%s)", exc)
        yield ADMITTED
    except (db.OperationalError, db.InterfaceError) as exc:  # a credential's owner could not be read
        log.warning("Rate limits not applied: the database does not answer (%s)", exc)
        yield ADMITTED


def _needs_user(policies):
    return any(policy.scope == RateLimitPolicy.Scope.USER for policy in policies)


def verdict(request, user_of):
    """The Verdict on `request` (waiting out a delay policy). `user_of()`: the session's user, asked
    only when a per-user policy matches."""
    active = selectors.fresh_active_policies() or selectors.load_active_policies()
    policies = active.matching(request.path)
    if not policies:
        return ADMITTED
    steps = _admission(request, user_of() if _needs_user(policies) else None, policies, active.engines)
    step = next(steps)
    while not isinstance(step, Verdict):
        time.sleep(step)
        step = next(steps)
    return step


async def averdict(request, user_of):
    """`verdict` for async callers: `user_of` is a coroutine function."""
    active = selectors.fresh_active_policies() or await sync_to_async(selectors.load_active_policies)()
    policies = active.matching(request.path)
    if not policies:
        return ADMITTED
    user = await user_of() if _needs_user(policies) else None
    # redis-py's asyncio pools are bound to one event loop; the sync pool serves every thread.
    steps = _admission(request, user, policies, active.engines)
    step = await sync_to_async(next)(steps)
    while not isinstance(step, Verdict):
        await asyncio.sleep(step)
        step = await sync_to_async(next)(steps)
    return step


def counted_as(path, client_ip):
    """A stand-in request to `path` from `client_ip`, carrying no credential: what a policy counts of a
    request that did not come over HTTP (its user is passed to the verdict separately)."""
    request = HttpRequest()
    request.path = request.path_info = path
    request.META["REMOTE_ADDR"] = client_ip or ""
    return request
