"""The alerting pages, included at alerts/ (paths here are relative to it)."""

from django.urls import path

from alerts import views as alert_views

app_name = "alerts"

urlpatterns = [
    path("", alert_views.alerts_page, name="list"),
    path("pack/", alert_views.pack_enable, name="pack"),
    path("rules/", alert_views.rule_create, name="rule-create"),
    path("rules/<slug:name>/", alert_views.rule_page, name="rule"),
    path("rules/<slug:name>/toggle/", alert_views.rule_toggle, name="rule-toggle"),
    path("rules/<slug:name>/delete/", alert_views.rule_delete, name="rule-delete"),
    path("receivers/", alert_views.receiver_create, name="receiver-create"),
    path("receivers/<int:pk>/toggle/", alert_views.receiver_toggle, name="receiver-toggle"),
    path("receivers/<int:pk>/delete/", alert_views.receiver_delete, name="receiver-delete"),
    path("silences/", alert_views.silence_create, name="silence-create"),
    path("silences/<int:pk>/expire/", alert_views.silence_expire, name="silence-expire"),
]
