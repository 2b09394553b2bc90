"""The built-in rule that makes a budget's soft limit alert exists from the start, so that setting a
soft limit needs no other step (docs/usage.md); disable or silence it like any other rule. The rule as
the pack had it then (a migration keeps its own copy: the pack may change later)."""

from django.db import migrations

RULE = {
    "series": "budget_soft_limit_reached", "comparator": "==", "threshold": 1, "for_seconds": 0,
    "severity": "warning", "builtin": True,
    "annotations": {"summary": "Budget {{ $labels.budget }} has reached its soft limit.",
                    "description": "Requests still pass until its hard limit; the Usage page shows what is left."},
}


def create(apps, schema_editor):
    apps.get_model("monitoring", "AlertRule").objects.get_or_create(name="budget-soft-limit", defaults=RULE)


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0001_initial")]
    operations = [migrations.RunPython(create, migrations.RunPython.noop)]
