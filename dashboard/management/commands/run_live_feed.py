import asyncio

from django.conf import settings
from django.core.management.base import BaseCommand

from alerts import evaluate as alerting
from dashboard import live
from telemetry import cluster
from usage import persist as usage_persist


class Command(BaseCommand):
    help = ("The live feed's producer: every BLAZE_FEED_INTERVAL_SECONDS a snapshot for the dashboards, the "
            "metric history and the alert rules; and the storing of usage events. Run one (./blaze up does); a "
            "second one waits as a standby (and stores usage beside the first).")

    def add_arguments(self, parser):
        parser.add_argument("--interval", type=float, default=settings.BLAZE_FEED_INTERVAL_SECONDS)

    def handle(self, *args, interval, **options):
        self.stdout.write(f"Live feed: a snapshot every {interval:g} s")
        cluster.start("feed")
        usage_persist.start()
        asyncio.run(live.produce(interval=interval, evaluate=alerting.evaluate))
