"""Every Prometheus metric Blaze exports, in one module: import it and call `.labels(...).inc()`.

Each process counts in its own registry and publishes it through Redis (telemetry/cluster.py), so
the live feed and `/metrics/prometheus` cover every process of every host.
"""

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

HTTP_REQUESTS = Counter(
    "blaze_http_requests_total", "HTTP requests answered, by route, method and status.",
    ["endpoint", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "blaze_http_request_duration_seconds", "Time to answer an HTTP request (to the first byte of a stream).",
    ["endpoint", "method"], buckets=LATENCY_BUCKETS,
)

INFERENCE_LATENCY = Histogram(
    "blaze_inference_duration_seconds", "Time a batch spends in the engine, per engine.",
    ["engine", "kind"], buckets=LATENCY_BUCKETS,
)
TIME_TO_FIRST_TOKEN = Histogram(
    "blaze_time_to_first_token_seconds", "Time from a streamed request's arrival to its first token.",
    ["engine"], buckets=LATENCY_BUCKETS,
)
INTER_TOKEN_LATENCY = Histogram(
    "blaze_inter_token_seconds", "Time between two tokens relayed to a streaming client.", ["engine"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
MODEL_REQUESTS = Histogram(
    "blaze_model_request_duration_seconds",
    "Time to answer a /v1 request (to the first byte of a stream), per model named (a route or an engine) and "
    "outcome (ok, client_error, server_error).",
    ["model", "outcome"], buckets=LATENCY_BUCKETS,
)
OUTCOMES = {2: "ok", 4: "client_error"}  # by status class; anything else is a server error


def observe_model_request(model, status, seconds):
    """A /v1 (or playground) request for `model` answered with `status` after `seconds`."""
    MODEL_REQUESTS.labels(model, OUTCOMES.get(status // 100, "server_error")).observe(seconds)


TOKENS_GENERATED = Counter("blaze_tokens_generated_total", "Completion tokens generated.", ["engine"])
TOKENS_PER_SECOND = Gauge(
    "blaze_tokens_per_second", "Completion tokens per second of the engine's last batch.", ["engine"],
)
BATCH_SIZE = Histogram(
    "blaze_batch_size", "Requests merged into one batched call (continuous scheduling: rows per decode step).",
    ["engine"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
QUEUE_WAIT = Histogram(
    "blaze_queue_wait_seconds", "Time a request waited in its worker for a batch slot, by priority.",
    ["engine", "priority"], buckets=(0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
REFUSED = Counter(
    "blaze_requests_refused_total", "Requests a worker refused at once: its engine's queue or itself was full.",
    ["engine", "reason"],
)
QUEUE_DEPTH = Gauge(
    "blaze_queue_depth", "Requests waiting in an engine's batcher.", ["engine"],
)

MODEL_CACHE_EVENTS = Counter(
    "blaze_model_cache_events_total", "Model cache hits, misses (loads) and evictions, per worker.",
    ["worker", "event"],
)
MODEL_CACHE_BYTES = Gauge(
    "blaze_model_cache_bytes", "Bytes held by loaded models, per worker.", ["worker"],
)
EMBEDDING_CACHE_EVENTS = Counter(
    "blaze_embedding_cache_events_total", "Embedding result cache hits and misses.", ["engine", "event"],
)
PREFIX_CACHE_HITS = Counter(
    "blaze_prefix_cache_hits_total", "LLM requests whose prompt started with a prefix the engine's prefix cache held.",
    ["engine"],
)
COLD_STARTS = Counter(
    "blaze_cold_starts_total", "Requests that waited for their engine's model to load on the worker.", ["engine"],
)
COLD_START_SECONDS = Counter(
    "blaze_cold_start_seconds_total", "Seconds requests waited for their engine's model to load.", ["engine"],
)
PREFIX_CACHE_TOKENS_SAVED = Counter(
    "blaze_prefix_cache_tokens_saved_total", "Prompt tokens an engine's prefix cache supplied, not computed.",
    ["engine"],
)

RATE_LIMIT_REJECTIONS = Counter(
    "blaze_rate_limit_rejections_total", "Requests refused (or delayed) by a rate limit.",
    ["scope", "algorithm", "action"],
)
SECURITY_EVENTS = Counter("blaze_security_events_total", "Threat detections and blocks.", ["kind"])

BREAKER_STATE = Gauge(
    "blaze_breaker_state", "Circuit breaker state per target: 0 closed, 1 half-open, 2 open.", ["target"],
)
BREAKER_TRANSITIONS = Counter(
    "blaze_breaker_transitions_total", "Circuit breaker state changes.", ["target", "from_state", "to_state"],
)
ROUTE_REQUESTS = Counter(
    "blaze_route_requests_total", "Requests a route sent to each target, by outcome (ok or failed).",
    ["route", "target", "outcome"],
)
ROUTE_FAILOVERS = Counter("blaze_route_failovers_total", "Requests moved to another target after a failure.", ["route"])
ROUTE_FALLBACKS = Counter(
    "blaze_route_fallbacks_total", "Requests a route's fallback answered, its own targets exhausted.",
    ["route", "fallback"],
)
OUTBOUND_WAIT = Histogram(
    "blaze_outbound_wait_seconds",
    "Time a request to a remote host waited for its engine's outbound cap (max_rps or max_concurrency).",
    ["engine", "cap"], buckets=(0.001, 0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
OUTBOUND_REFUSED = Counter(
    "blaze_outbound_refused_total",
    "Requests to a remote host its engine's outbound cap refused (handed to a route's next target, else a 503).",
    ["engine", "cap"],
)

# Usage, counted as records are stored (usage/persist.py): one series per team (empty: none) and engine.
USAGE_REQUESTS = Counter("blaze_usage_requests_total", "Served requests stored as usage records.",
                         ["team", "engine", "kind"])
USAGE_TOKENS = Counter("blaze_usage_tokens_total", "Prompt and completion tokens of stored usage records.",
                       ["team", "engine"])
USAGE_COST = Counter("blaze_usage_cost_total", "Cost of stored usage records, at the engine's price then.",
                     ["team", "engine", "currency"])
