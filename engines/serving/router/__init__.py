"""The router: which target (engine replica) of a route takes a request.

- `alease_target(route, client_key, exclude)` → (candidate, lease, breaker permit), or
  `NoTargetAvailable`: the serving path's pick, counted in flight, on the event loop's Redis client;
- `candidates(route)`, `survey(route)`: who may take a request now, and why the rest may not;
- `client_key(...)`: the identity ip_hash keeps sticky;
- `resilience_id_of(target)`: the resilience id of a RouteTarget (its breaker's and health record's);
- `state`: the Redis-shared numbers (`acquire`/`release` around each request, `target_stats`);
- `strategies`: the eight strategies as plain functions.
"""

from engines.serving.router.pick import (
    Candidate,
    NoTargetAvailable,
    alease_target,
    candidates,
    client_key,
    resilience_id_of,
    survey,
)

__all__ = ["Candidate", "NoTargetAvailable", "alease_target", "candidates", "client_key", "resilience_id_of", "survey"]
