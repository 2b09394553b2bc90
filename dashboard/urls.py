from django.urls import path

from dashboard import views

urlpatterns = [
    path("", views.overview, name="overview"),
    path("requests/", views.requests_page, name="requests"),
    path("requests/<str:request_id>/", views.request_detail, name="request"),
    path("health", views.health, name="health"),
    path("health/detailed", views.health_detailed, name="health-detailed"),
    path("metrics", views.metrics_json, name="metrics"),
    path("metrics/prometheus", views.metrics_prometheus, name="metrics-prometheus"),
    path("errors/summary", views.errors_summary, name="errors-summary"),
]
