"""The router: which target (engine replica) of a route takes a request.

- `pick_target(route, client_key, exclude, unavailable)` → a `Candidate`, or `NoTargetAvailable`;
- `alease_target(route, client_key, exclude)` → (candidate, lease, breaker permit): the serving path's
  pick, counted in flight, on the event loop's Redis client;
- `candidates(route)`, `survey(route)`: who may take a request now, and why the rest may not;
- `client_key(...)`: the identity ip_hash keeps sticky;
- `resilience_id(target)`: the name of a target's breaker and health record;
- `state`: the Redis-shared numbers (`acquire`/`release` around each request, `target_stats`);
- `strategies`: the eight strategies as plain functions.
"""

from .pick import Candidate, NoTargetAvailable, alease_target, candidates, client_key, pick_target, resilience_id, survey

__all__ = ["Candidate", "NoTargetAvailable", "alease_target", "candidates", "client_key", "pick_target", "resilience_id",
           "survey"]
