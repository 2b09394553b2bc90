"""WebSocket routes. The playground adds its own here."""

from django.urls import path

from monitoring.consumers import DashboardConsumer

websocket_urlpatterns = [
    path("ws/dashboard/", DashboardConsumer.as_asgi()),
]
