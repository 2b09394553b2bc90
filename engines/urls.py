from django.urls import path

from . import images, views, worker_views

app_name = "engines"

urlpatterns = [
    path("", views.engine_list, name="list"),
    path("images/<int:pk>.png", images.image_file, name="image"),
    path("workers/", worker_views.worker_list, name="workers"),
    path("workers/<str:worker_id>/cache/", worker_views.worker_cache_action, name="worker_cache"),
    path("new/", views.engine_form, name="create"),
    path("<slug:name>/", views.engine_detail, name="detail"),
    path("<slug:name>/edit/", views.engine_form, name="edit"),
    path("<slug:name>/toggle/", views.engine_toggle, name="toggle"),
    path("<slug:name>/delete/", views.engine_delete, name="delete"),
]
