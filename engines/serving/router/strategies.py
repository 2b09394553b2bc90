"""The eight balancing strategies, as plain functions: `pick(strategy, candidates, state, client_key)`.

`candidates` is a non-empty list of live targets (`router.Candidate`: id, weight, in_flight,
latency, error_rate, completed, warm); `state` a `RouteState` (the route's shared turn counter,
sticky mapping and random source). Each returns one candidate.

- round_robin: each candidate in turn (by id), exact across processes (one Redis counter).
- weighted_round_robin: nginx's smooth weighted round robin over one cycle of the weights, indexed
  by the same counter: exact per cycle, interleaved (5, 1, 1 → a a b a c a a).
- least_connections: fewest in flight per unit of weight.
- least_response_time: untried targets first, then the lowest latency average.
- ip_hash: the client keeps its target for the route's sticky TTL; a new client, or one whose target
  is gone, gets one by weighted rendezvous hashing (only the clients of a removed target move).
  Without a client key it is weighted random.
- adaptive: weighted random by weight / (latency × (1 + 10 × error_rate)).
- random, weighted_random: uniform, or in proportion to weight.

Where a ranking strategy (least_connections, least_response_time) ties, a warm candidate wins (its
model is already in a live worker's cache, or it is remote), then the ties take turns. Warmth never
overrides a strategy's distribution: an unloaded engine still gets its share, which loads it.
"""

import hashlib
import math
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engines.serving.router.pick import Candidate
    from engines.serving.router.state import RouteState

ERROR_PENALTY = 10  # adaptive: a 10 % error rate halves a target's share
MIN_LATENCY = 0.001  # seconds; keeps adaptive's division finite for instant targets


def pick(strategy: str, candidates: Sequence["Candidate"], state: "RouteState", client_key: str = "") -> "Candidate":
    """One of `candidates` by the named strategy; raises KeyError for an unknown strategy."""
    if not candidates:
        raise ValueError("No candidates to pick from.")
    return STRATEGIES[strategy](sorted(candidates, key=lambda c: c.id), state, client_key)


def round_robin(candidates: list["Candidate"], state: "RouteState", client_key: str) -> "Candidate":
    return candidates[(state.next_turn() - 1) % len(candidates)]


@lru_cache(maxsize=256)
def smooth_schedule(weights: Sequence[tuple[int, int]]) -> tuple[int, ...]:
    """One cycle of nginx's smooth weighted round robin over `weights` ((id, weight), …): a tuple
    of ids, each appearing weight ÷ gcd times."""
    divisor = math.gcd(*(weight for _, weight in weights))
    weights = [(target_id, weight // divisor) for target_id, weight in weights]
    total = sum(weight for _, weight in weights)
    current = [0] * len(weights)
    order = []
    for _ in range(total):
        for index, (_, weight) in enumerate(weights):
            current[index] += weight
        best = max(range(len(weights)), key=current.__getitem__)
        current[best] -= total
        order.append(weights[best][0])
    return tuple(order)


def weighted_round_robin(candidates: list["Candidate"], state: "RouteState", client_key: str) -> "Candidate":
    schedule = smooth_schedule(tuple((c.id, c.weight) for c in candidates))
    chosen = schedule[(state.next_turn() - 1) % len(schedule)]
    return next(c for c in candidates if c.id == chosen)


def _best(candidates: list["Candidate"], state: "RouteState", score: Callable[["Candidate"], Any]) -> "Candidate":
    """The lowest-scoring candidate; on a tie a warm one, and tied equals take turns."""
    low = min(score(c) for c in candidates)
    tied = [c for c in candidates if score(c) == low]
    tied = [c for c in tied if c.warm] or tied
    return tied[0] if len(tied) == 1 else tied[(state.next_turn() - 1) % len(tied)]


def least_connections(candidates: list["Candidate"], state: "RouteState", client_key: str) -> "Candidate":
    return _best(candidates, state, lambda c: c.in_flight / c.weight)


def least_response_time(candidates: list["Candidate"], state: "RouteState", client_key: str) -> "Candidate":
    # Untried first so that every target gets timed; one that only failed has no latency and comes last.
    return _best(candidates, state, lambda c: (
        (0, 0.0) if not c.completed else (1, c.latency if c.latency is not None else math.inf)
    ))


def _rendezvous(client_key: str, candidate: "Candidate") -> float:
    digest = hashlib.blake2b(f"{client_key}|{candidate.id}".encode(), digest_size=8).digest()
    uniform = (int.from_bytes(digest, "big") + 0.5) / 2**64  # in (0, 1)
    return -candidate.weight / math.log(uniform)


def ip_hash(candidates: list["Candidate"], state: "RouteState", client_key: str) -> "Candidate":
    if not client_key:
        return weighted_random(candidates, state, client_key)
    mapped = state.sticky(client_key)
    for candidate in candidates:
        if candidate.id == mapped:
            return candidate
    chosen = max(candidates, key=lambda c: _rendezvous(client_key, c))
    state.stick(client_key, chosen.id)
    return chosen


def adaptive_weight(candidate: "Candidate", default_latency: float) -> float:
    """weight / (latency × (1 + 10 × error_rate)); an untimed target counts at the mean latency."""
    latency = candidate.latency if candidate.latency is not None else default_latency
    return candidate.weight / (max(latency, MIN_LATENCY) * (1 + ERROR_PENALTY * candidate.error_rate))


def adaptive(candidates: list["Candidate"], state: "RouteState", client_key: str) -> "Candidate":
    timed = [c.latency for c in candidates if c.latency is not None]
    default_latency = sum(timed) / len(timed) if timed else 1.0
    weights = [adaptive_weight(c, default_latency) for c in candidates]
    return state.rng.choices(candidates, weights=weights)[0]


def random(candidates: list["Candidate"], state: "RouteState", client_key: str) -> "Candidate":
    return state.rng.choice(candidates)


def weighted_random(candidates: list["Candidate"], state: "RouteState", client_key: str) -> "Candidate":
    return state.rng.choices(candidates, weights=[c.weight for c in candidates])[0]


# The strategies that call state.next_turn(): round robin's turns, and the ranking strategies' ties.
TAKE_TURNS = {"round_robin", "weighted_round_robin", "least_connections", "least_response_time"}

STRATEGIES = {
    "round_robin": round_robin,
    "weighted_round_robin": weighted_round_robin,
    "least_connections": least_connections,
    "least_response_time": least_response_time,
    "ip_hash": ip_hash,
    "adaptive": adaptive,
    "random": random,
    "weighted_random": weighted_random,
}
