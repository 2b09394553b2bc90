"""The live feed's producer loop and its fan-out: one snapshot per interval, published once on the
channel layer's `dashboard` group; every web process relays it to its open dashboards
(`consumers.DashboardConsumer`). Redis pub/sub carries it (channels_redis's pub/sub layer), so the
producer publishes once whatever the number of pages, and each web process receives it once.

Only one producer runs at a time: each holds a lease in Redis (renewed every interval, lapsing after
a few), so a second `run_live_feed`, on this machine or another, waits as a standby.
"""

import asyncio
import logging
import time
import uuid

import orjson
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer

from core import shared_state
from dashboard.feed import Feed
from dashboard.history import History

log = logging.getLogger(__name__)

GROUP = "dashboard"
EVENT = "feed.snapshot"  # handled by DashboardConsumer.feed_snapshot


def latest():
    """The last snapshot published (JSON text), for a page that connects between two; None if none."""
    return shared_state.client().get(shared_state.feed_latest_key())


async def _elected(me, lease_seconds):
    """Whether this producer holds the lease (taking it when free, renewing it when ours)."""
    redis = shared_state.loop_client()
    key = shared_state.feed_producer_key()
    if await redis.set(key, me, nx=True, ex=lease_seconds):
        return True
    if await redis.get(key) == me:
        await redis.expire(key, lease_seconds)
        return True
    return False


async def produce(*, interval, evaluate=None, rounds=None):
    """Publish a snapshot every `interval` seconds while elected (`rounds`: stop after that many
    intervals, for tests and benches). `evaluate(samples, now)` → the alerts to show, if given."""
    feed, history, me = Feed(), History(), uuid.uuid4().hex
    layer, lease = get_channel_layer(), max(3 * interval, 5)
    done = 0
    while rounds is None or done < rounds:
        started = time.monotonic()
        try:
            if await _elected(me, lease):
                await publish_once(feed, history, layer, evaluate)
        except Exception:  # noqa: BLE001 - a Redis or database blip must not end the feed
            log.exception("live feed: this interval's snapshot failed")
        done += 1
        await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))


async def publish_once(feed, history, layer, evaluate=None):
    snapshot, samples = await sync_to_async(feed.step)()
    await sync_to_async(history.record)(samples, snapshot["t"])
    snapshot["alerts"] = await sync_to_async(evaluate)(samples, snapshot["t"]) if evaluate else []
    text = orjson.dumps(snapshot).decode()
    await shared_state.loop_client().set(shared_state.feed_latest_key(), text, ex=60)
    await layer.group_send(GROUP, {"type": EVENT, "text": text})
    return snapshot
