"""The live feed's snapshot: everything the dashboard shows, computed once per interval by the one
producer (`manage.py run_live_feed`) and fanned out to every open page over the channel layer.

Rates and percentiles come from the Prometheus metrics of every live process of the cluster (each
publishes its own through Redis: `telemetry.cluster`): `Feed` keeps the cumulative readings of the
last BLAZE_FEED_WINDOW_SECONDS and differences the newest with the oldest per process, then sums, as
Prometheus's `sum(rate())` and `histogram_quantile()` do over a range: a process that appears counts
from zero, one that is lost stops counting, and neither moves the others' rates. The rest is read as it
is now: the workers' heartbeats, the engines' rows, each route's targets, the circuit breakers.

`Feed.step()` returns (snapshot, samples): the snapshot is the JSON the pages draw; the samples
(`telemetry.series`) go to the metric history and the alert rules.
"""

import collections
import time

from django.conf import settings

from engines import heartbeats
from engines.models import Engine, Route
from engines.selectors import route_status
from engines.serving.resilience import breaker
from telemetry import cluster
from telemetry.series import Sample
from usage import budgets

COUNTERS = {"blaze_tokens_generated_total", "blaze_model_cache_events_total", "blaze_cold_starts_total",
            "blaze_cold_start_seconds_total"}
HISTOGRAMS = {
    "blaze_model_request_duration_seconds", "blaze_time_to_first_token_seconds", "blaze_inter_token_seconds",
    "blaze_batch_size", "blaze_queue_wait_seconds",
}
GAUGES = {"blaze_queue_depth"}


def read_metrics(snapshots=None):
    """The cumulative values of the feed's metrics in every live process (`telemetry.cluster.processes()`,
    or `snapshots`): {(process, metric, labels as a sorted tuple): value} for counters and gauges, and
    for histograms {(process, metric, labels): {"buckets": {le: cumulative count}, "count": n, "sum": s}}."""
    values, histograms = {}, {}
    for data in cluster.processes() if snapshots is None else snapshots:
        process = f"{data['host']}/{data['process']}"
        for family, _, _, samples in data["families"]:
            if family in COUNTERS or family + "_total" in COUNTERS or family in GAUGES:
                for name, labels, value in samples:
                    if name in COUNTERS or name in GAUGES:
                        values[(process, name, tuple(sorted(labels.items())))] = value
                continue
            if family not in HISTOGRAMS:
                continue
            for name, labels, value in samples:
                part = name.removeprefix(family + "_")
                key = (process, family, tuple(sorted((k, v) for k, v in labels.items() if k != "le")))
                entry = histograms.setdefault(key, {"buckets": {}, "count": 0.0, "sum": 0.0})
                if part == "bucket":
                    entry["buckets"][float(labels["le"])] = value
                elif part in ("count", "sum"):
                    entry[part] = value
    return values, histograms


def _summed(values):
    """{(process, metric, labels): value} → {(metric, labels): sum over processes}."""
    total = {}
    for (_, *key), value in values.items():
        total[tuple(key)] = total.get(tuple(key), 0.0) + value
    return total


def quantile(buckets, q):
    """histogram_quantile(q) over {upper bound: cumulative count}, interpolated linearly inside the
    bucket as Prometheus does; None without observations. Past the largest finite bound: that bound."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0
    if total <= 0:
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return lower
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1)
        lower, below = bound, count
    return lower


def _delta_histogram(new, old):
    """new − old of one histogram (old may be None: everything is new); counts never go below 0."""
    if old is None:
        return new
    buckets = {le: max(0.0, count - old["buckets"].get(le, 0.0)) for le, count in new["buckets"].items()}
    return {"buckets": buckets, "count": max(0.0, new["count"] - old["count"]),
            "sum": max(0.0, new["sum"] - old["sum"])}


def _merged(histograms):
    """The sum of several delta histograms (a route's outcomes, say)."""
    merged = {"buckets": collections.Counter(), "count": 0.0, "sum": 0.0}
    for entry in histograms:
        merged["buckets"].update(entry["buckets"])
        merged["count"] += entry["count"]
        merged["sum"] += entry["sum"]
    return merged


def _round(value, digits=4):
    return None if value is None else round(value, digits)


class Feed:
    """One producer's memory: the readings of the last window. `clock` is injectable for tests."""

    def __init__(self, window=None, clock=time.time):
        self.window = settings.BLAZE_FEED_WINDOW_SECONDS if window is None else window
        self.clock = clock
        self.readings = collections.deque()

    def _deltas(self, now):
        """(seconds covered, counter deltas, histogram deltas, current values) between the oldest reading
        kept and now, each differenced per process and then summed over the cluster."""
        values, histograms = read_metrics()
        if self.readings and now - self.readings[-1][0] > 2 * self.window:
            # No reading for a while (another producer held the lease, or this one stalled): differencing
            # with one that old would count all that time's requests into this window. Start afresh.
            self.readings.clear()
        self.readings.append((now, values, histograms))
        while len(self.readings) > 2 and self.readings[1][0] <= now - self.window:
            self.readings.popleft()
        then, old_values, old_histograms = self.readings[0]
        current = _summed(values)
        if len(self.readings) == 1:  # the first reading: nothing to difference yet
            return 0.0, {}, {}, current
        seconds = now - then
        counters = _summed({key: max(0.0, value - old_values.get(key, 0.0)) for key, value in values.items()
                            if key[1] in COUNTERS})
        deltas = {}
        for per_process, entry in histograms.items():
            key, delta = per_process[1:], _delta_histogram(entry, old_histograms.get(per_process))
            deltas[key] = _merged([deltas[key], delta]) if key in deltas else delta
        return seconds, counters, deltas, current

    def step(self):
        now = self.clock()
        seconds, counters, deltas, current = self._deltas(now)
        samples = []
        routes = self._routes(seconds, deltas, samples)
        engines = self._engines(seconds, counters, deltas, current, samples)
        workers = self._workers(seconds, counters, samples)
        breakers = self._breakers(samples)
        self._budgets(now, samples)
        requests = [entry for (name, _), entry in deltas.items() if name == "blaze_model_request_duration_seconds"]
        snapshot = {
            "t": now, "window_seconds": round(seconds, 3), "routes": routes, "engines": engines,
            "workers": workers, "breakers": breakers, "latency_histogram": _histogram_bars(_merged(requests)),
        }
        return snapshot, samples

    def _routes(self, seconds, deltas, samples):
        by_model = collections.defaultdict(dict)
        for (name, labels), entry in deltas.items():
            if name == "blaze_model_request_duration_seconds":
                labels = dict(labels)
                by_model[labels["model"]][labels["outcome"]] = entry
        rows = []
        for route in Route.objects.order_by("name"):
            status = route_status(route)
            enabled_targets = [t for t in status["targets"] if t["enabled"]]
            usable = sum(1 for t in enabled_targets if t.get("available"))
            rows.append({
                "name": route.name, "enabled": route.enabled, "strategy": route.strategy, "kind": "route",
                "targets_available": usable, "targets_total": len(enabled_targets),
                "open_breakers": sum(1 for t in status["targets"] if t.get("breaker") == breaker.OPEN),
                "targets": status["targets"], "error": status.get("error", ""),
                **self._traffic(route.name, by_model.pop(route.name, {}), seconds, samples),
            })
            samples += [Sample("route_targets_available", usable, {"route": route.name}),
                        Sample("route_targets_total", len(enabled_targets), {"route": route.name})]
        for model in sorted(by_model):  # engines called by their own name
            rows.append({"name": model, "kind": "engine", **self._traffic(model, by_model[model], seconds, samples)})
        return rows

    @staticmethod
    def _traffic(model, outcomes, seconds, samples):
        merged = _merged(outcomes.values())
        errors = outcomes.get("server_error", {}).get("count", 0.0)
        rate = merged["count"] / seconds if seconds else 0.0
        numbers = {
            "requests_per_second": _round(rate, 3),
            "errors_per_second": _round(errors / seconds if seconds else 0.0, 3),
            "error_ratio": _round(errors / merged["count"] if merged["count"] else 0.0),
            "latency_p50_seconds": _round(quantile(merged["buckets"], 0.5)),
            "latency_p95_seconds": _round(quantile(merged["buckets"], 0.95)),
            "latency_p99_seconds": _round(quantile(merged["buckets"], 0.99)),
        }
        labels = {"route": model}
        samples += [Sample(f"route_{name}", value, labels) for name, value in numbers.items() if value is not None]
        return numbers

    @staticmethod
    def _engines(seconds, counters, deltas, current, samples):
        def of(metric, engine):
            return deltas.get((metric, (("engine", engine),)), {"buckets": {}, "count": 0.0, "sum": 0.0})

        rows = []
        for engine in Engine.objects.order_by("name"):
            name = engine.name
            ttft, itl, batch = (of(metric, name) for metric in (
                "blaze_time_to_first_token_seconds", "blaze_inter_token_seconds", "blaze_batch_size"))
            tokens = counters.get(("blaze_tokens_generated_total", (("engine", name),)), 0.0)
            waits = [entry for (metric, labels), entry in deltas.items()  # summed over priorities
                     if metric == "blaze_queue_wait_seconds" and ("engine", name) in labels]
            waited = {}
            for entry in waits:
                for bound, count in entry["buckets"].items():
                    waited[bound] = waited.get(bound, 0.0) + count
            numbers = {
                "ttft_p50_seconds": _round(quantile(ttft["buckets"], 0.5)),
                "ttft_p95_seconds": _round(quantile(ttft["buckets"], 0.95)),
                "itl_p50_seconds": _round(quantile(itl["buckets"], 0.5)),
                "itl_p95_seconds": _round(quantile(itl["buckets"], 0.95)),
                "tokens_per_second": _round(tokens / seconds if seconds else 0.0, 2),
                "batch_size_mean": _round(batch["sum"] / batch["count"] if batch["count"] else None, 2),
                "queue_depth": current.get(("blaze_queue_depth", (("engine", name),)), 0.0),
                "queue_wait_p95_seconds": _round(quantile(waited, 0.95)),
                "failed": 1 if engine.status == Engine.Status.FAILED else 0,
            }
            # Since the live workers started (their counters), not per window: cold starts are rare.
            cold = current.get(("blaze_cold_starts_total", (("engine", name),)), 0.0)
            waited = current.get(("blaze_cold_start_seconds_total", (("engine", name),)), 0.0)
            numbers["cold_starts"] = int(cold)
            numbers["cold_start_mean_seconds"] = _round(waited / cold if cold else None, 3)
            labels = {"engine": name}
            samples += [Sample(f"engine_{key}", value, labels) for key, value in numbers.items() if value is not None]
            rows.append({"name": name, "kind": engine.kind, "backend": engine.backend, "enabled": engine.enabled,
                         "status": engine.status, "status_detail": engine.status_detail, **numbers})
        return rows

    @staticmethod
    def _workers(seconds, counters, samples):
        rows = []
        for worker in sorted(heartbeats.live_workers(), key=lambda w: w["id"]):
            wid = worker["id"]
            evicted = counters.get(("blaze_model_cache_events_total", (("event", "eviction"), ("worker", wid))), 0.0)
            row = {
                "id": wid, "lost": worker["lost"], "device": worker["device"], "in_flight": worker["in_flight"],
                "cpu_percent": worker.get("cpu_percent"), "memory_bytes": worker.get("memory_bytes"),
                "total_bytes": worker["total_bytes"], "free_bytes": worker["free_bytes"],
                "gpu_utilization_percent": worker.get("gpu_utilization_percent"),
                "cache_used_bytes": worker["cache_used_bytes"], "cache_budget_bytes": worker["cache_budget_bytes"],
                "models": [{"engine": e["engine"], "bytes": e["bytes"], "prefix_cache": e.get("prefix_cache")}
                           for e in worker["cache"]],
                "heartbeat_age_seconds": round(time.time() - worker["last_seen"], 1),
                "evictions_per_minute": round(evicted * 60 / seconds, 2) if seconds else 0.0,
            }
            labels = {"worker": wid}
            samples += [Sample("worker_up", 0 if worker["lost"] else 1, labels),
                        Sample("worker_cache_bytes", row["cache_used_bytes"], labels),
                        Sample("worker_cache_evictions_per_minute", row["evictions_per_minute"], labels)]
            if row["cpu_percent"] is not None:
                samples += [Sample("worker_cpu_percent", row["cpu_percent"], labels),
                            Sample("worker_memory_bytes", row["memory_bytes"], labels)]
            rows.append(row)
        return rows

    @staticmethod
    def _breakers(samples):
        rows = [{"target": snap["target"], "state": snap["state"]} for snap in breaker.snapshots()]
        samples += [Sample("breaker_open", 1 if row["state"] == breaker.OPEN else 0, {"target": row["target"]})
                    for row in rows]
        return rows

    @staticmethod
    def _budgets(now, samples):
        """Each enabled budget's share of its hard limit spent this period and, where it has a soft
        limit, whether spent has reached it (what the `budget-soft-limit` rule fires on)."""
        if not settings.BLAZE_USAGE_ENABLED:
            return
        active = budgets.enabled()
        standings = budgets.standing(active, now) if active else {}
        for budget in active:
            spent, labels = standings[budget.pk].spent, {"budget": budget.name, "scope": budget.scope}
            samples.append(Sample("budget_used_ratio", float(spent / budget.limit) if budget.limit else 1.0, labels))
            if budget.soft_limit is not None:
                samples.append(Sample("budget_soft_limit_reached", int(spent >= budget.soft_limit), labels))


def _histogram_bars(histogram):
    """The window's request latencies as bars: one per bucket, its count (not cumulative)."""
    bounds, bars, below = sorted(histogram["buckets"]), [], 0.0
    for bound in bounds:
        count = histogram["buckets"][bound]
        bars.append({"le": None if bound == float("inf") else bound, "count": round(count - below)})
        below = count
    return bars
