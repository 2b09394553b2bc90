import asyncio
import time

from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.management.base import BaseCommand

from engines.serving.canary import check_local_targets
from engines.serving.resilience import http
from engines.serving.resilience.health import check_remote_engines
from telemetry import cluster


class Command(BaseCommand):
    help = (
        "Every BLAZE_HEALTH_CHECK_INTERVAL seconds, check every enabled remote engine's host (GET <base_url>/models) "
        "and every local route target whose model a live worker holds (a one-token canary), and record their "
        "health for every web process to see. Run one per installation (./blaze up starts it)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="Check each host once and exit.")
        parser.add_argument("--interval", type=float, help="Seconds between rounds (default: the setting).")

    def handle(self, *args, once=False, interval=None, **options):
        if not once:
            cluster.start("health")
        try:
            # async_to_sync, not asyncio.run: the ORM calls inside then run on this thread and its connection.
            async_to_sync(self._run)(once, interval or settings.BLAZE_HEALTH_CHECK_INTERVAL)
        except KeyboardInterrupt:
            pass

    async def _run(self, once, interval):
        try:
            while True:
                started = time.monotonic()
                remote, local = await asyncio.gather(check_remote_engines(), check_local_targets())
                for name, check in [(engine.name, check) for engine, check in remote] + local:
                    line = f"{name}: {check['state']} ({check['latency'] * 1000:.0f} ms) {check['detail']}"
                    self.stdout.write(line.rstrip() if check["ok"] else self.style.WARNING(line))
                if once:
                    return
                await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))
        finally:
            await http.aclose_all()
