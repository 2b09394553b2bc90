"""WebSocket routes: the dashboard's live feed and the playground's chat."""

from django.urls import path

from dashboard.consumers import DashboardConsumer
from engines.playground.consumers import PlaygroundConsumer

websocket_urlpatterns = [
    path("ws/dashboard/", DashboardConsumer.as_asgi()),
    path("ws/playground/", PlaygroundConsumer.as_asgi()),
]
