from django.urls import path

from . import images, route_views, views, worker_views

app_name = "engines"

urlpatterns = [
    path("", views.engine_list, name="list"),
    path("images/<int:pk>.png", images.image_file, name="image"),
    path("workers/", worker_views.worker_list, name="workers"),
    path("workers/<str:worker_id>/cache/", worker_views.worker_cache_action, name="worker_cache"),
    path("routes/", route_views.route_list, name="routes"),
    path("routes/<slug:name>/", route_views.route_detail, name="route"),
    path("routes/<slug:name>/delete/", route_views.route_delete, name="route_delete"),
    path("routes/<slug:name>/targets/", route_views.route_target_add, name="route_target_add"),
    path("routes/<slug:name>/targets/<int:target_id>/", route_views.route_target_edit, name="route_target"),
    path("routes/<slug:name>/targets/<int:target_id>/toggle/", route_views.route_target_toggle, name="route_target_toggle"),
    path("routes/<slug:name>/targets/<int:target_id>/remove/", route_views.route_target_remove, name="route_target_remove"),
    path("routes/<slug:name>/targets/<int:target_id>/reset-breaker/", route_views.route_target_reset_breaker,
         name="route_target_reset_breaker"),
    path("new/", views.engine_form, name="create"),
    path("<slug:name>/", views.engine_detail, name="detail"),
    path("<slug:name>/edit/", views.engine_form, name="edit"),
    path("<slug:name>/toggle/", views.engine_toggle, name="toggle"),
    path("<slug:name>/delete/", views.engine_delete, name="delete"),
]
