"""The dashboard's WebSocket: the live feed's snapshots, to signed-in users whose role may see
engines. The Origin is checked before this runs (blaze_site/asgi.py: AllowedHostsOriginValidator)."""

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from core.sockets import REFUSED, may_see_engines
from dashboard import live


class DashboardConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        if not await may_see_engines(self.scope):
            await self.close(code=REFUSED)
            return
        await self.channel_layer.group_add(live.GROUP, self.channel_name)
        await self.accept()
        latest = await database_sync_to_async(live.latest)()
        if latest:
            await self.send(text_data=latest)  # the page draws at once, not at the next interval

    async def disconnect(self, code):
        await self.channel_layer.group_discard(live.GROUP, self.channel_name)

    async def feed_snapshot(self, event):
        await self.send(text_data=event["text"])
