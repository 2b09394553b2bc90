"""WebSocket routes. The dashboard feed and the playground add theirs here."""

websocket_urlpatterns = []
