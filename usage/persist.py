"""Storing usage events (`events`): read from the Redis stream through a consumer group, written as
UsageRecords and added into the hourly and daily UsageRollups in one transaction, acknowledged after
it commits.

Nothing is lost when the storing process dies: an event read but not acknowledged stays pending in
the group, and the next drain (this process's or another's: every live feed process runs one) claims
what has been pending longer than CLAIM_IDLE_MS and stores it. Nothing is stored twice: a record's
`event` is unique, and rollups only add the records this transaction inserted.
"""

import datetime
import logging
import os
import socket
import threading
import time
from collections import defaultdict
from decimal import Decimal
from typing import Any

import orjson
import redis
from django.conf import settings
from django.db import connection, transaction

from core import shared_state
from telemetry import metrics
from usage import budgets
from usage.models import Price, UsageRecord, UsageRollup

log = logging.getLogger(__name__)

GROUP = "persist"
CLAIM_IDLE_MS = 30_000  # an event read this long ago and never acknowledged: its reader died
SUMS = UsageRollup.SUMS
KEY = ("period", "dimension", "user_id", "start", "value", "currency")  # a rollup's unique columns
COUNTS = ("prompt_tokens", "cached_tokens", "completion_tokens", "embedding_inputs", "images", "steps")


def _consumer() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _ensure_group(client: Any) -> None:
    try:
        client.xgroup_create(shared_state.usage_events_key(), GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def drain(count: int = 500) -> int:
    """Store what is waiting: first events whose reader died (pending over CLAIM_IDLE_MS), then new
    ones, `count` at a time, until none is left. Returns how many records were stored."""
    client = shared_state.client()
    _ensure_group(client)
    key, consumer, stored = shared_state.usage_events_key(), _consumer(), 0
    _, claimed, _ = client.xautoclaim(key, GROUP, consumer, min_idle_time=CLAIM_IDLE_MS, start_id="0-0", count=count)
    if claimed:
        stored += _store(client, claimed)
    while True:
        replies = client.xreadgroup(GROUP, consumer, {key: ">"}, count=count)
        entries = replies[0][1] if replies else []
        if not entries:
            return stored
        stored += _store(client, entries)


def _store(client: Any, entries: list[tuple[str, dict[str, str]]]) -> int:
    events, ids = [], []
    for entry_id, fields in entries:
        ids.append(entry_id)
        try:
            events.append(orjson.loads(fields["event"]))
        except (KeyError, orjson.JSONDecodeError):
            log.error("usage: dropped a malformed event %s: %r", entry_id, fields)
    inserted = _write(events) if events else []
    holds = {event["id"]: event["hold"] for event in events if event.get("hold")}
    for record in inserted:  # after the commit: what a stored record used is spent on its budgets
        if record.event in holds:
            budgets.settle(holds[record.event], record)
    client.xack(shared_state.usage_events_key(), GROUP, *ids)
    client.xdel(shared_state.usage_events_key(), *ids)
    _count(inserted)
    return len(inserted)


def _write(events: list[dict[str, Any]]) -> list[UsageRecord]:
    prices = {price.engine: price for price in Price.objects.filter(engine__in={e["engine"] for e in events})}
    with transaction.atomic():
        known = set(UsageRecord.objects.filter(event__in=[e["id"] for e in events]).values_list("event", flat=True))
        records, seen = [], set()
        for event in events:
            if event["id"] in known or event["id"] in seen:
                continue
            seen.add(event["id"])
            records.append(_record(event, prices.get(event["engine"])))
        UsageRecord.objects.bulk_create(records)
        _add_to_rollups(records)
    return records


def _record(event: dict[str, Any], price: Price | None) -> UsageRecord:
    counted = {name: int(event.get(name) or 0) for name in COUNTS}
    seconds = float(event.get("worker_seconds") or 0.0)
    cost = Decimal(0)
    if price is not None and event.get("kind") == "embedding":  # its tokens are priced as embedding tokens only
        cost = price.cost(embedding_tokens=counted["prompt_tokens"], worker_seconds=seconds)
    elif price is not None:
        cost = price.cost(prompt_tokens=counted["prompt_tokens"], cached_tokens=counted["cached_tokens"],
                          completion_tokens=counted["completion_tokens"], images=counted["images"],
                          worker_seconds=seconds)
    return UsageRecord(
        event=event["id"], at=datetime.datetime.fromtimestamp(event["at"], tz=datetime.UTC),
        user_id=event.get("user_id"), api_key_id=event.get("api_key_id"), team_id=event.get("team_id"),
        source=event.get("source", ""), kind=event.get("kind", ""), route=event.get("route") or "",
        engine=event["engine"], adapter=event.get("adapter") or "", worker=event.get("worker") or "",
        outcome=event.get("outcome", "answered"),
        worker_seconds=seconds, cost=cost, currency=price.currency if price is not None else "", **counted)


def _add_to_rollups(records: list[UsageRecord]) -> None:
    """Add the records into their hour's and day's rollups, per dimension, for everyone and for their
    user: one upsert per group that adds the sums (INSERT … ON CONFLICT DO UPDATE, in PostgreSQL and
    SQLite alike)."""
    groups: dict[tuple[Any, ...], dict[str, Any]] = defaultdict(lambda: dict.fromkeys(SUMS, 0))
    for record in records:
        hour = record.at.replace(minute=0, second=0, microsecond=0)
        values = zip(UsageRollup.DIMENSIONS, (record.engine, record.route, record.kind, _id(record.user_id),
                                              _id(record.api_key_id), _id(record.team_id)))
        users = {0, record.user_id or 0}
        for dimension, value in values:
            for period, start in ((UsageRollup.HOUR, hour), (UsageRollup.DAY, hour.replace(hour=0))):
                for user in users:
                    sums = groups[(period, dimension, user, start, value, record.currency)]
                    sums["requests"] += 1
                    for name in SUMS[1:]:
                        sums[name] += getattr(record, name)
    if not groups:
        return
    ops, quote = connection.ops, connection.ops.quote_name
    table = quote(UsageRollup._meta.db_table)
    columns = [quote(name) for name in (*KEY, *SUMS)]
    conflict = [quote(name) for name in KEY]
    sql = (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))}) "
           f"ON CONFLICT ({', '.join(conflict)}) DO UPDATE SET "
           + ", ".join(f"{quote(name)} = {table}.{quote(name)} + excluded.{quote(name)}" for name in SUMS))
    cost_field = UsageRollup._meta.get_field("cost")
    rows = []
    for (period, dimension, user, start, value, currency), sums in groups.items():
        values = [sums[name] for name in SUMS[:-1]]
        cost = ops.adapt_decimalfield_value(sums["cost"], cost_field.max_digits, cost_field.decimal_places)
        rows.append((period, dimension, user, ops.adapt_datetimefield_value(start), value, currency, *values, cost))
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)


def _id(value: int | None) -> str:
    return "" if value is None else str(value)


def _count(records: list[UsageRecord]) -> None:
    for record in records:
        team = str(record.team_id or "")
        tokens = record.prompt_tokens + record.completion_tokens
        if tokens:
            metrics.USAGE_TOKENS.labels(team, record.engine).inc(tokens)
        metrics.USAGE_REQUESTS.labels(team, record.engine, record.kind).inc()
        if record.cost:
            metrics.USAGE_COST.labels(team, record.engine, record.currency).inc(float(record.cost))


def prune(now: float | None = None) -> int:
    """Delete raw records older than BLAZE_USAGE_RAW_DAYS (rollups stay). Returns how many."""
    cutoff = datetime.datetime.fromtimestamp((now or time.time()) - settings.BLAZE_USAGE_RAW_DAYS * 86400,
                                             tz=datetime.UTC)
    deleted, _ = UsageRecord.objects.filter(at__lt=cutoff).delete()
    return deleted


def start() -> threading.Thread:
    """Drain every BLAZE_USAGE_PERSIST_SECONDS (and prune hourly) on a daemon thread of this process."""

    def loop() -> None:
        pruned_at = 0.0
        while True:
            try:
                drain()
                if time.monotonic() - pruned_at > 3600:
                    prune()
                    pruned_at = time.monotonic()
            except Exception:  # noqa: BLE001 - Redis or the database away: events wait in the stream
                log.warning("usage: could not store events; they wait in Redis", exc_info=True)
            time.sleep(settings.BLAZE_USAGE_PERSIST_SECONDS)

    thread = threading.Thread(target=loop, name="usage-persist", daemon=True)
    thread.start()
    return thread
