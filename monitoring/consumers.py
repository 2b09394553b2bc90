"""The dashboard's WebSocket: the live feed's snapshots, to signed-in users whose role may see
engines. The Origin is checked before this runs (blaze_site/asgi.py: AllowedHostsOriginValidator)."""

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from monitoring import live

REFUSED = 4403  # a WebSocket close code in the application range: "forbidden"


class DashboardConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not await database_sync_to_async(user.has_perm)(
                "engines.view_engine"):
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
