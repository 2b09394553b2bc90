"""Every request (but health checks, static files and metrics) is counted against the enabled policies
that match its path. Over a limit: 429 with Retry-After and X-RateLimit-*, or, for a delay policy, a
wait for its turn. Admitted requests carry X-RateLimit-* of the tightest policy. Redis down: the
request passes (fail open) and a warning is logged."""

import asyncio
import logging
import math
import time
from dataclasses import dataclass

import redis
from asgiref.sync import sync_to_async

from blaze_site.middleware import DualModeMiddleware
from blaze_site.views import refusal
from monitoring import metrics

from . import algorithms, identity, selectors
from .models import RateLimitPolicy

log = logging.getLogger(__name__)

# Never limited: probes and scrapers, and the way back for an operator whose policy is too tight
# (signing in — guarded by the login lockout — and the rate-limit pages themselves).
EXEMPT_PREFIXES = ("/health", "/static/", "/metrics", "/login/", "/ratelimits/", "/api/ratelimits/")


@dataclass(frozen=True)
class Verdict:
    """Refused by `refused_by` (its `decision` says when to retry), or admitted with the tightest
    `decision` among the policies that counted the request (None when none did)."""

    refused_by: RateLimitPolicy | None = None
    decision: algorithms.Decision | None = None


def _admission(request, user, policies, engines):
    """Count the request against each policy in turn. A generator so that the sync and the async
    middleware share this one loop and each waits its own way: it yields seconds to wait (the delay
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
        yield Verdict()


def _headers(decision):
    return {
        "X-RateLimit-Limit": str(decision.limit),
        "X-RateLimit-Remaining": str(decision.remaining),
        "X-RateLimit-Reset": str(math.ceil(decision.reset)),
    }


def _refused(request, verdict):
    policy, decision = verdict.refused_by, verdict.decision
    retry_after = max(1, math.ceil(decision.retry_after))
    message = (f"Rate limit exceeded ({policy.name}: {policy.limit} requests per {policy.period_seconds} s). "
               f"Try again in {retry_after} s.")
    return refusal(request, 429, message, code="rate_limit_exceeded",
                   headers={**_headers(decision), "Retry-After": str(retry_after)})


def _admitted(response, verdict):
    if verdict.decision is not None:
        for name, value in _headers(verdict.decision).items():
            response[name] = value
    return response


def _needs_user(policies):
    return any(policy.scope == RateLimitPolicy.Scope.USER for policy in policies)


class RateLimitMiddleware(DualModeMiddleware):
    def call(self, request):
        if request.path.startswith(EXEMPT_PREFIXES):
            return self.get_response(request)
        active = selectors.fresh_active_policies() or selectors.load_active_policies()
        policies = active.matching(request.path)
        if not policies:
            return self.get_response(request)
        user = request.user if _needs_user(policies) else None
        steps = _admission(request, user, policies, active.engines)
        step = next(steps)
        while not isinstance(step, Verdict):
            time.sleep(step)
            step = next(steps)
        if step.refused_by is not None:
            return _refused(request, step)
        return _admitted(self.get_response(request), step)

    async def __acall__(self, request):
        if request.path.startswith(EXEMPT_PREFIXES):
            return await self.get_response(request)
        active = selectors.fresh_active_policies() or await sync_to_async(selectors.load_active_policies)()
        policies = active.matching(request.path)
        if not policies:
            return await self.get_response(request)
        # /v1 runs without the session's sign-in (blaze_site.asgi): its callers count by credential.
        user = await request.auser() if _needs_user(policies) and hasattr(request, "auser") else None
        # redis-py's asyncio pools are bound to one event loop; the sync pool serves every thread.
        steps = _admission(request, user, policies, active.engines)
        step = await sync_to_async(next)(steps)
        while not isinstance(step, Verdict):
            await asyncio.sleep(step)
            step = await sync_to_async(next)(steps)
        if step.refused_by is not None:
            return _refused(request, step)
        return _admitted(await self.get_response(request), step)
