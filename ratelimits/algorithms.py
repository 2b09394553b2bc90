"""The counting algorithms, all in Redis so that every web process shares one count.

`hit(policy, identity)` counts one request and says whether it may pass; `peek` says the same without
counting. Fixed and sliding windows are the `limits` library's; the token bucket, the leaky bucket and
the adaptive limit are Lua scripts in `lua/` (atomic: no read-modify-write race between processes),
timed by Redis's own clock so that hosts with skewed clocks agree.

Adaptive is a token bucket whose rate and burst scale by engine health, a factor between
BLAZE_RATELIMIT_ADAPTIVE_FLOOR and 1:

    factor = max(floor, (1 - error_rate) × min(1, target_latency / latency))

- error_rate: failed / all of the recent outcomes every engine keeps in Redis (the last 50 requests
  per engine, written by `engines.worker.status.batch_done`); 0 when there are none.
- latency: the mean batch latency of all engines over the batches run since the previous sample,
  from their cumulative stats (sampled at most once a second; a second without batches keeps it).
- target_latency: BLAZE_RATELIMIT_TARGET_LATENCY_SECONDS.

Failures or slow batches shrink the allowed rate; as successes replace failures in the recent
outcomes and batches speed up again, it recovers.
"""

import math
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from django.conf import settings
from limits import RateLimitItemPerSecond
from limits.storage import RedisStorage
from limits.strategies import FixedWindowRateLimiter, SlidingWindowCounterRateLimiter

from core import shared_state

from .models import RateLimitPolicy

Algorithm = RateLimitPolicy.Algorithm
HEALTH_SAMPLE_SECONDS = 1.0
LUA_DIR = Path(__file__).with_name("lua")


@dataclass(frozen=True)
class Decision:
    """One policy's answer for one request.

    `limit` and `remaining` are requests (for buckets: the bucket's size and what is left in it),
    `reset` the seconds until the count is back to full, `retry_after` the seconds until a refused
    request would pass, `wait` the seconds an admitted request must wait for its reserved turn.
    """

    allowed: bool
    limit: int
    remaining: int
    reset: float
    retry_after: float = 0.0
    wait: float = 0.0
    factor: float = 1.0


@lru_cache(maxsize=None)
def _window_storage(url, prefix):
    return RedisStorage(url, connection_pool=shared_state.client().connection_pool, key_prefix=prefix)


def _windows():
    return _window_storage(settings.REDIS_URL, shared_state.ratelimit_window_prefix())


def _window_item(policy):
    # `limits` names its keys `<namespace>/<identifiers>/<amount>/<multiples>/second`: the policy is
    # the namespace, so a policy's counters can be found (`window_identities`) and a changed limit
    # starts fresh counters.
    return RateLimitItemPerSecond(policy.limit, policy.period_seconds, namespace=f"policy{policy.pk}")


def _window(policy, identity, cost):
    storage = _windows()
    strategy = (FixedWindowRateLimiter if policy.algorithm == Algorithm.FIXED_WINDOW
                else SlidingWindowCounterRateLimiter)(storage)
    item = _window_item(policy)
    allowed = strategy.hit(item, identity) if cost else True
    stats = strategy.get_window_stats(item, identity)
    if policy.algorithm == Algorithm.FIXED_WINDOW:
        # get_window_stats rounds the window's end to whole seconds; the key's own expiry is exact.
        ttl_ms = storage.get_connection().pttl(storage.prefixed_key(item.key_for(identity)))
        reset = max(ttl_ms, 0) / 1000
    else:
        reset = max(0.0, stats.reset_time - time.time())
    return Decision(
        allowed=allowed, limit=policy.limit, remaining=stats.remaining, reset=reset,
        retry_after=0.0 if allowed else max(reset, 0.001),
    )


TOKEN_BUCKET = shared_state.Script(LUA_DIR / "token_bucket.lua")
LEAKY_BUCKET = shared_state.Script(LUA_DIR / "leaky_bucket.lua")


def _token_bucket(policy, identity, cost, max_wait, engines=()):
    keys = [shared_state.ratelimit_bucket_key(policy.pk, policy.algorithm, identity)]
    args = [policy.limit / policy.period_seconds, policy.capacity, cost, max_wait]
    if policy.algorithm == Algorithm.ADAPTIVE:
        keys.append(shared_state.ratelimit_health_key())
        for name in engines:
            keys += [shared_state.engine_outcomes_key(name), shared_state.engine_stats_key(name)]
        args += [settings.BLAZE_RATELIMIT_TARGET_LATENCY_SECONDS, settings.BLAZE_RATELIMIT_ADAPTIVE_FLOOR,
                 HEALTH_SAMPLE_SECONDS]
    allowed, tokens, capacity, wait, retry_after, factor = TOKEN_BUCKET.run(keys, args)
    tokens, capacity, rate = float(tokens), float(capacity), policy.limit / policy.period_seconds * float(factor)
    return Decision(
        allowed=bool(int(allowed)), limit=math.floor(capacity), remaining=max(0, math.floor(tokens)),
        reset=max(0.0, capacity - tokens) / rate, retry_after=float(retry_after), wait=float(wait),
        factor=float(factor),
    )


def _leaky_bucket(policy, identity, cost, max_wait):
    interval = policy.period_seconds / policy.limit
    allowed, wait, retry_after, drains_in = LEAKY_BUCKET.run(
        [shared_state.ratelimit_bucket_key(policy.pk, policy.algorithm, identity)], [interval, cost, max_wait],
    )
    drains_in = float(drains_in)
    # Requests that could still be admitted now: free slots within the wait the policy allows.
    remaining = max(0, math.floor((max_wait - drains_in) / interval) + 1) if drains_in <= max_wait else 0
    return Decision(
        allowed=bool(int(allowed)), limit=policy.limit, remaining=remaining, reset=drains_in,
        retry_after=float(retry_after), wait=float(wait),
    )


def _evaluate(policy, identity, *, cost, max_wait, engines):
    if policy.algorithm in (Algorithm.FIXED_WINDOW, Algorithm.SLIDING_WINDOW):
        return _window(policy, identity, cost)
    if policy.algorithm == Algorithm.LEAKY_BUCKET:
        return _leaky_bucket(policy, identity, cost, max_wait)
    return _token_bucket(policy, identity, cost, max_wait, engines)


def hit(policy, identity, *, max_wait=0.0, engines=()):
    """Count one request of `identity` against `policy`. Buckets reserve a turn up to `max_wait`
    seconds ahead (the delay action); windows cannot, they refuse with `retry_after` instead.
    `engines`: the engine names whose health an adaptive policy follows. Raises redis.RedisError."""
    return _evaluate(policy, identity, cost=1, max_wait=max_wait, engines=engines)


def peek(policy, identity, *, engines=()):
    """The policy's state for `identity` without counting a request."""
    return _evaluate(policy, identity, cost=0, max_wait=0.0, engines=engines)


def identities(policy, limit=20):
    """Up to `limit` identities that currently have a counter under `policy` (found by SCAN: for
    the operators' page, never for the request path)."""
    redis = shared_state.client()
    if policy.algorithm in (Algorithm.FIXED_WINDOW, Algorithm.SLIDING_WINDOW):
        start = f"{shared_state.ratelimit_window_prefix()}:"
        namespace = f"policy{policy.pk}/"
        suffix = f"/{policy.limit}/{policy.period_seconds}/second"
        pattern = f"{start}{'{' if policy.algorithm == Algorithm.SLIDING_WINDOW else ''}{namespace}*"
        found = set()
        for key in redis.scan_iter(pattern, count=500):
            name = key[len(start):].lstrip("{").removesuffix("}")
            if name.endswith(suffix):
                found.add(name[len(namespace):-len(suffix)])
            if len(found) >= limit:
                break
        return sorted(found)
    start = shared_state.ratelimit_bucket_key(policy.pk, policy.algorithm, "")
    found = []
    for key in redis.scan_iter(f"{start}*", count=500):
        found.append(key[len(start):])
        if len(found) >= limit:
            break
    return sorted(found)
