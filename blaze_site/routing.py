"""WebSocket routes: the dashboard's live feed and the playground's chat."""

from django.urls import path

from engines.playground.consumers import PlaygroundConsumer
from monitoring.consumers import DashboardConsumer

websocket_urlpatterns = [
    path("ws/dashboard/", DashboardConsumer.as_asgi()),
    path("ws/playground/", PlaygroundConsumer.as_asgi()),
]
