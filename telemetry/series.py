"""The series the live feed computes every interval: what the dashboard charts, the metric history
keeps and alert rules compare. A sample is (series name, labels, value); the labels say which route,
engine, worker or target it is of.

`SERIES` is the catalogue: a rule or a history query naming anything else is refused (400).
"""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Series:
    unit: str  # "1/s", "s", "ratio", "count", "bytes", "percent", "bool" (1 or 0)
    help: str
    labels: tuple = ()


@dataclass(frozen=True)
class Sample:
    name: str
    value: float
    labels: dict = field(default_factory=dict)

    def key(self):
        """The sample's identity: its name and labels, as the history and alert fingerprints use."""
        return series_key(self.name, self.labels)


def series_key(name, labels):
    """`route_latency_p95_seconds{route="chat"}`: Prometheus's notation, labels sorted."""
    if not labels:
        return name
    return name + "{" + ",".join(f'{key}="{labels[key]}"' for key in sorted(labels)) + "}"


SERIES = {
    # Per route (the `model` a client names: a route, or an engine called by its own name).
    "route_requests_per_second": Series("1/s", "Requests answered per second.", ("route",)),
    "route_errors_per_second": Series("1/s", "Requests answered with a server error (5xx) per second.", ("route",)),
    "route_error_ratio": Series("ratio", "Share of requests answered with a server error.", ("route",)),
    "route_latency_p50_seconds": Series("s", "Median time to answer (to the first byte of a stream).", ("route",)),
    "route_latency_p95_seconds": Series("s", "95th percentile time to answer.", ("route",)),
    "route_latency_p99_seconds": Series("s", "99th percentile time to answer.", ("route",)),
    "route_targets_available": Series("count", "Targets that may take a request now.", ("route",)),
    "route_targets_total": Series("count", "Enabled targets of the route.", ("route",)),
    # Per engine.
    "engine_ttft_p50_seconds": Series("s", "Median time to first token of streamed requests.", ("engine",)),
    "engine_ttft_p95_seconds": Series("s", "95th percentile time to first token.", ("engine",)),
    "engine_itl_p50_seconds": Series("s", "Median time between two tokens of a stream.", ("engine",)),
    "engine_itl_p95_seconds": Series("s", "95th percentile time between two tokens.", ("engine",)),
    "engine_tokens_per_second": Series("1/s", "Completion tokens generated per second.", ("engine",)),
    "engine_batch_size_mean": Series("count", "Mean requests per batched call.", ("engine",)),
    "engine_queue_depth": Series("count", "Requests waiting in the engine's batchers.", ("engine",)),
    "engine_queue_wait_p95_seconds": Series(
        "s", "95th percentile time a request waited in its worker for a batch slot.", ("engine",)),
    "engine_failed": Series("bool", "1 while the engine's status is FAILED.", ("engine",)),
    # Per circuit breaker (a target's resilience id: `engine` or `engine@worker`).
    "breaker_open": Series("bool", "1 while the target's circuit breaker is open.", ("target",)),
    # Per worker.
    "worker_up": Series("bool", "1 while the worker beats; 0 once it is lost.", ("worker",)),
    "worker_cpu_percent": Series("percent", "CPU the worker process uses (100 = one core).", ("worker",)),
    "worker_memory_bytes": Series("bytes", "Resident memory of the worker process.", ("worker",)),
    "worker_cache_bytes": Series("bytes", "Bytes the worker's loaded models take.", ("worker",)),
    "worker_cache_evictions_per_minute": Series("1/min", "Models evicted from the worker's cache per minute.",
                                                ("worker",)),
    # Per enabled budget (usage/models.py: Budget), its current period.
    "budget_used_ratio": Series("ratio", "Share of the budget's hard limit spent this period.", ("budget", "scope")),
    "budget_soft_limit_reached": Series("bool", "1 once the budget's spend reaches its soft limit.",
                                        ("budget", "scope")),
}
