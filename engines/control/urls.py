from django.urls import path

from engines.control import engine_views, image_views, model_views, route_views, worker_views

app_name = "engines"

urlpatterns = [
    path("", engine_views.engine_list, name="list"),
    path("images/<int:pk>.png", image_views.image_file, name="image"),
    path("workers/", worker_views.worker_list, name="workers"),
    path("models/", model_views.model_list, name="models"),
    path("models/downloads/", model_views.model_download, name="model_download"),
    path("models/downloads/<str:download_id>/cancel/", model_views.model_download_cancel, name="model_download_cancel"),
    path("workers/<str:worker_id>/cache/", worker_views.worker_cache_action, name="worker_cache"),
    path("routes/", route_views.route_list, name="routes"),
    path("routes/<slug:name>/", route_views.route_detail, name="route"),
    path("routes/<slug:name>/delete/", route_views.route_delete, name="route_delete"),
    path("routes/<slug:name>/targets/", route_views.route_target_add, name="route_target_add"),
    path("routes/<slug:name>/targets/<int:target_pk>/", route_views.route_target_edit, name="route_target"),
    path("routes/<slug:name>/targets/<int:target_pk>/toggle/", route_views.route_target_toggle,
         name="route_target_toggle"),
    path("routes/<slug:name>/targets/<int:target_pk>/remove/", route_views.route_target_remove,
         name="route_target_remove"),
    path("routes/<slug:name>/targets/<int:target_pk>/reset-breaker/", route_views.route_target_reset_breaker,
         name="route_target_reset_breaker"),
    path("new/", engine_views.engine_form, name="create"),
    path("<slug:name>/", engine_views.engine_detail, name="detail"),
    path("<slug:name>/edit/", engine_views.engine_form, name="edit"),
    path("<slug:name>/toggle/", engine_views.engine_toggle, name="toggle"),
    path("<slug:name>/unload/", engine_views.engine_unload, name="unload"),
    path("<slug:name>/delete/", engine_views.engine_delete, name="delete"),
    path("<slug:name>/adapters/", engine_views.adapter_add, name="adapter_add"),
    path("<slug:name>/adapters/<slug:adapter>/remove/", engine_views.adapter_remove, name="adapter_remove"),
]
