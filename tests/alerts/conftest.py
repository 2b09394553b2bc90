import pytest


@pytest.fixture(autouse=True)
def _no_rules_yet(db):
    """These tests start from no rules: the one the database is created with (budget-soft-limit, an
    alerts migration) is left out, as a transactional test's flush leaves it out anyway."""
    from alerts.models import AlertRule

    AlertRule.objects.filter(name="budget-soft-limit").delete()
