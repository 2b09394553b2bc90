"""How Blaze copes with targets that fail: circuit breakers, retries, timeouts and health.

- `breaker.py`: CircuitBreaker, shared by every process through Redis.
- `retry.py`: which failures are retried (5xx, timeouts, connection errors; never 4xx) and the policy.
- `http.py`: pooled aiohttp sessions per remote host, per-phase timeouts, `request()` with retries
  within a deadline and an optional breaker.
- `outbound.py`: OutboundLimit, a remote engine's caps on what is sent to its host (`max_rps`,
  `max_concurrency`), shared by every process through Redis; `http.request(limit=...)` waits under them.
- `health.py`: HealthMonitor (HEALTHY / DEGRADED / UNHEALTHY / UNKNOWN) from active checks and
  real traffic; `manage.py check_upstreams` runs the checks of remote engines.

Breakers and health records are keyed by a resilience id, a string: use `resilience_id` (or the
router's `resilience_id_of(route_target)`) so that the router, the workers and the checker name one
target alike. Elsewhere "target" is a RouteTarget and "target_pk" its primary key.
"""


def resilience_id(engine_name: str, worker: str | None = None) -> str:
    """`name` for an engine as a whole (a remote engine), `name@worker` for one replica on a worker."""
    return f"{engine_name}@{worker}" if worker else str(engine_name)
