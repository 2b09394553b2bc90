"""Metric history for the charts: each series' points of the last BLAZE_HISTORY_POINTS intervals (an
hour at one a second) and its per-minute means of the last BLAZE_HISTORY_MINUTES (a day), in Redis.

Redis rather than the database: a point a series a second is a bounded list push (RPUSH + LTRIM)
that every web process can read, keys left unwritten expire by themselves, and nothing needs a prune
job; a page asks for an hour and gets it in one round trip per series.
"""

import json
import time

from django.conf import settings

from core import shared_state

DAY = 86400


class History:
    """The producer's writer: `record(samples, now)` once per interval. It keeps the running sums of
    the current minute in memory and writes their means when the minute turns."""

    def __init__(self):
        self._minute, self._sums = None, {}

    def record(self, samples, now=None):
        now = time.time() if now is None else now
        minute = int(now // 60)
        pipe = shared_state.client().pipeline(transaction=False)
        if self._minute is not None and minute != self._minute:
            for key, (total, count) in self._sums.items():
                _push(pipe, shared_state.history_minutes_key(key), self._minute * 60, total / count,
                      settings.BLAZE_HISTORY_MINUTES)
            self._sums = {}
        self._minute = minute
        described = {}
        for sample in samples:
            key = sample.key()
            _push(pipe, shared_state.history_points_key(key), now, sample.value, settings.BLAZE_HISTORY_POINTS)
            total, count = self._sums.get(key, (0.0, 0))
            self._sums[key] = (total + sample.value, count + 1)
            described[key] = json.dumps({"name": sample.name, "labels": sample.labels, "seen": round(now)})
        if described:
            pipe.hset(shared_state.history_series_key(), mapping=described)
        pipe.execute()


def _push(pipe, key, t, value, keep):
    pipe.rpush(key, f"{t:.3f}:{value:.6g}")
    pipe.ltrim(key, -keep, -1)
    pipe.expire(key, DAY + 3600)


def series_of(name, labels=None):
    """[(series key, labels)] of the series `name` whose labels include `labels`, seen within a day;
    those unseen for longer are forgotten."""
    client = shared_state.client()
    found, stale, now = [], [], time.time()
    for key, raw in client.hgetall(shared_state.history_series_key()).items():
        described = json.loads(raw)
        if now - described["seen"] > DAY:
            stale.append(key)
        elif described["name"] == name and all(described["labels"].get(k) == v for k, v in (labels or {}).items()):
            found.append((key, described["labels"]))
    if stale:
        client.hdel(shared_state.history_series_key(), *stale)
    return sorted(found)


def read(name, labels=None, seconds=3600, now=None):
    """The series `name` (every label set including `labels`) over the last `seconds`: per-interval
    points when they reach that far (an hour by default), else per-minute means. [{"name", "labels",
    "step": "interval" or "minute", "points": [[t, value], ...]}]."""
    now = time.time() if now is None else now
    fine = seconds <= settings.BLAZE_HISTORY_POINTS * settings.BLAZE_FEED_INTERVAL_SECONDS
    found = series_of(name, labels)
    pipe = shared_state.client().pipeline(transaction=False)
    for key, _ in found:
        pipe.lrange(shared_state.history_points_key(key) if fine else shared_state.history_minutes_key(key), 0, -1)
    since, result = now - seconds, []
    for (_, series_labels), raw in zip(found, pipe.execute() if found else []):
        points = [[float(t), float(v)] for t, v in (entry.split(":", 1) for entry in raw)]
        result.append({"name": name, "labels": series_labels, "step": "interval" if fine else "minute",
                       "points": [point for point in points if point[0] >= since]})
    return result

