from django.apps import AppConfig


class AlertsConfig(AppConfig):
    """Alert rules, receivers and silences. The label is the one these models were created under (the
    app was `monitoring` before the split), so existing databases keep their tables, migration history
    and permissions (`monitoring.add_alertrule` …) as they are."""

    name = "alerts"
    label = "monitoring"
