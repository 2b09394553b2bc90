import asyncio

from django.conf import settings
from django.core.management.base import BaseCommand

from monitoring import alerting, live


class Command(BaseCommand):
    help = ("The live feed's producer: every BLAZE_FEED_INTERVAL_SECONDS a snapshot for the dashboards, the "
            "metric history and the alert rules. Run one (./blaze up does); a second one waits as a standby.")

    def add_arguments(self, parser):
        parser.add_argument("--interval", type=float, default=settings.BLAZE_FEED_INTERVAL_SECONDS)

    def handle(self, *args, interval, **options):
        self.stdout.write(f"Live feed: a snapshot every {interval:g} s")
        asyncio.run(live.produce(interval=interval, evaluate=alerting.evaluate))
